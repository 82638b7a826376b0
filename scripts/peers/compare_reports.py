#!/usr/bin/env python3
"""Compare two sink reports (sinkrep analyze --json vs scripts/peers/hf_sink_report.py).

Prints, per field, the max absolute and relative difference over layers and the worst layer;
exits 1 if any relative difference exceeds --rtol where the larger magnitude is > --atol-floor
(tiny values carry no relative meaning), or if the reports are not about the same input.
Relative difference = |a - b| / max(|a|, |b|). Standard library only: runs with any python3.
"""
import argparse
import json
import sys

PROG = "compare_reports"
LAYER_FIELDS = ["attn_mass", "sink_frac", "agg_var_ratio", "dom_ratio", "max_abs_sink", "max_abs_others"]


def load(path):
    try:
        with open(path) as f:
            r = json.load(f)
        r["layers"]  # noqa: B018 - a report must have layers
        return r
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{PROG}: error: {path} is not a readable sink report: {type(e).__name__}: {e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol-floor", type=float, default=1e-6, help="ignore relative diffs below this magnitude")
    a = p.parse_args()
    A, B = load(a.a), load(a.b)
    fails = []

    # The input must be the same, else numbers are not comparable.
    for k in ["n_sequences", "n_tokens", "sink_pos", "eps"]:
        if A.get(k) != B.get(k):
            fails.append(f"{k}: {A.get(k)} vs {B.get(k)}")
    if len(A["layers"]) != len(B["layers"]):
        sys.exit(f"{PROG}: error: {len(A['layers'])} layers vs {len(B['layers'])}")
    if "next_token" in A and "next_token" in B and A["next_token"]["id"] != B["next_token"]["id"]:
        fails.append(f"next_token: {A['next_token']} vs {B['next_token']}")

    # stats[field] = [max_abs, max_rel, where_of_max_rel]; each pair of numbers goes through diff().
    stats = {}

    def diff(field, where, x, y):
        ad = abs(x - y)
        mag = max(abs(x), abs(y))
        rd = ad / mag if mag > 0 else 0.0
        s = stats.setdefault(field, [0.0, 0.0, None])
        s[0] = max(s[0], ad)
        if mag > a.atol_floor and rd >= s[1]:
            s[1], s[2] = rd, where
        if mag > a.atol_floor and rd > a.rtol:
            fails.append(f"{field} at {where}: {x!r} vs {y!r} (rel {rd:.2e})")

    notes = [f"{k} missing in {w}" for k in ["last_logits_head", "sink_metric"] for w, R in [(a.a, A), (a.b, B)]
             if k not in R]
    for i, (x, y) in enumerate(zip(A.get("last_logits_head", []), B.get("last_logits_head", []))):
        diff("last_logits_head", f"id {i}", x, y)
    # The 10 largest logits: same ids, close values.
    ta = {i: v for i, v in A.get("last_logits_top", [])}
    tb = {i: v for i, v in B.get("last_logits_top", [])}
    if ta and tb and list(ta) != list(tb):
        fails.append(f"last_logits_top ids: {list(ta)} vs {list(tb)}")
    for i in sorted(set(ta) & set(tb)):
        diff("last_logits_top", f"id {i}", ta[i], tb[i])
    if "sink_metric" in A and "sink_metric" in B:
        diff("sink_metric.value", "-", A["sink_metric"]["value"], B["sink_metric"]["value"])
    for la, lb in zip(A["layers"], B["layers"]):
        l = la["layer"]
        for f in LAYER_FIELDS:
            if f in la and f in lb:
                diff(f, f"layer {l}", la[f], lb[f])
            elif f"{f} missing" not in " ".join(notes):
                notes.append(f"{f} missing in {a.a if f not in la else a.b} (layer {l} and maybe others)")
        # Top FFN channels: same channel set expected; values compared channel by channel.
        ca = {c["channel"]: c["value"] for c in la.get("top_ffn_channels", [])}
        cb = {c["channel"]: c["value"] for c in lb.get("top_ffn_channels", [])}
        if set(ca) != set(cb):
            fails.append(f"top_ffn_channels at layer {l}: channels {sorted(ca)} vs {sorted(cb)}")
        for c in sorted(set(ca) & set(cb)):
            diff("top_ffn_channels.value", f"layer {l} ch {c}", ca[c], cb[c])

    print(f"{'field':24} {'max_abs':>11} {'max_rel':>11}  worst")
    for f, (ad, rd, where) in stats.items():
        print(f"{f:24} {ad:11.3e} {rd:11.3e}  {where}")
    if stats:
        wf, (_, wr, ww) = max(stats.items(), key=lambda kv: kv[1][1])
        print(f"worst: {wf} at {ww} (rel {wr:.3e})")
    for m in notes:  # a missing field is reported, not failed: the two tools may grow at different paces
        print(f"note: {m}")
    for m in fails[:20]:
        print(f"FAIL {m}")
    if len(fails) > 20:
        print(f"... and {len(fails) - 20} more")
    print(f"{PROG}: {'FAIL' if fails else 'ok'} ({len(fails)} over rtol {a.rtol:g} or mismatched)")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
