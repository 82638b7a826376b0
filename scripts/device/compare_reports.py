#!/usr/bin/env python3
"""Field-by-field comparison of two `sinkrep analyze|intervene --json` reports.

    compare_reports.py REFERENCE.json CANDIDATE.json [--rtol 1e-3] [--atol 1e-6]

Used by scripts/device/gpu-check.sh: REFERENCE is the CPU report carried in the device
bundle, CANDIDATE the same command's report on CUDA. Standard library only (the device
image's python3 runs it; so does any python3 here).

Every leaf is compared at its JSON path:
  - numbers: |a - b| <= atol + rtol * max(|a|, |b|). Both are f32 computations (TF32 off)
    reduced in f64, so CPU and CUDA differ by summation order only: ~1e-6 relative is
    typical, rtol 1e-3 leaves room for ratios of small variances;
  - integers in identifying fields (layer, channel, ids, counts): equal, except where the
    two entries of a ranked list swap places because their values are within tolerance
    of each other (a near-tie: reported, not a failure);
  - strings and booleans: equal; lists: same length (a different length is a threshold
    crossing, e.g. one more super neuron, and fails).
Prints one line per field beyond tolerance (at most 40), then a summary line with the
largest relative difference seen. Exit status 0 when nothing is beyond tolerance, 1 when
something is, 2 on unreadable input.
"""

import argparse
import json
import math
import sys

# Integer fields that identify something rather than measure it: compared exactly.
IDENT = {"layer", "channel", "id", "sink_pos", "n_sequences", "n_tokens"}


class Cmp:
    def __init__(self, rtol, atol):
        self.rtol, self.atol = rtol, atol
        self.fields = 0
        self.bad = []
        self.near_ties = []
        self.max_rel = (0.0, "")

    def close(self, a, b):
        return abs(a - b) <= self.atol + self.rtol * max(abs(a), abs(b))

    def number(self, path, key, a, b):
        self.fields += 1
        if a is None or b is None:  # NaN/Inf serialise as null
            if a is not b:
                self.bad.append(f"{path}: {a} vs {b}")
            return
        if key in IDENT and isinstance(a, int) and isinstance(b, int):
            if a != b:
                self.bad.append(f"{path}: {a} vs {b} (identifier)")
            return
        denom = max(abs(a), abs(b))
        rel = abs(a - b) / denom if denom > 0 else 0.0
        if rel > self.max_rel[0] and abs(a - b) > self.atol:
            self.max_rel = (rel, path)
        if not self.close(a, b):
            self.bad.append(f"{path}: {a!r} vs {b!r} (relative {rel:.2e})")

    def walk(self, path, key, a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k not in a or k not in b:
                    self.fields += 1
                    self.bad.append(f"{path}.{k}: only in {'reference' if k in a else 'candidate'}")
                    continue
                self.walk(f"{path}.{k}", k, a[k], b[k])
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                self.fields += 1
                self.bad.append(f"{path}: {len(a)} vs {len(b)} entries")
            for i, (x, y) in enumerate(zip(a, b)):
                if self.near_tie(x, y):
                    self.fields += 1
                    self.near_ties.append(f"{path}[{i}]")
                    continue
                self.walk(f"{path}[{i}]", key, x, y)
        elif isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
            self.fields += 1
            if a != b:
                self.bad.append(f"{path}: {a!r} vs {b!r}")
        elif (a is None or isinstance(a, (int, float))) and (b is None or isinstance(b, (int, float))):
            self.number(path, key, a, b)
        else:
            self.fields += 1
            self.bad.append(f"{path}: {type(a).__name__} vs {type(b).__name__}")

    def near_tie(self, x, y):
        """Two ranked entries ({channel|layer.., value|activation}) that name different
        channels with values within tolerance: their order is a coin toss."""
        if not (isinstance(x, dict) and isinstance(y, dict)):
            return False
        ids = [k for k in ("layer", "channel") if k in x and k in y]
        vals = [k for k in ("value", "activation") if k in x and k in y]
        if not ids or not vals or all(x[k] == y[k] for k in ids):
            return False
        return all(
            isinstance(x[v], (int, float)) and isinstance(y[v], (int, float)) and self.close(abs(x[v]), abs(y[v]))
            for v in vals
        )


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"compare_reports: error: cannot read {path}: {e}", file=sys.stderr)
        sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("candidate")
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--atol", type=float, default=1e-6)
    a = ap.parse_args()
    c = Cmp(a.rtol, a.atol)
    c.walk("$", "", load(a.reference), load(a.candidate))
    for line in c.bad[:40]:
        print(f"  beyond tolerance: {line}")
    if len(c.bad) > 40:
        print(f"  ... and {len(c.bad) - 40} more")
    if c.near_ties:
        print(f"  near-ties (order swapped, values within tolerance): {', '.join(c.near_ties[:10])}")
    rel, where = c.max_rel
    verdict = "SAME" if not c.bad else "DIFFERENT"
    print(
        f"{verdict}: {c.fields} fields, {len(c.bad)} beyond rtol {a.rtol:g} / atol {a.atol:g}, "
        f"{len(c.near_ties)} near-ties; largest relative difference {rel:.2e}"
        + (f" at {where}" if where else "")
        + f" ({a.reference} vs {a.candidate})"
    )
    sys.exit(0 if not c.bad else 1)


if __name__ == "__main__":
    main()
