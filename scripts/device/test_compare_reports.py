#!/usr/bin/env python3
"""Self-test of compare_reports.py on real reports: test_compare_reports.py DIR, where DIR
holds `sinkrep analyze|intervene --json` reports (the bundle's run/cpu-reports). It must
accept a report against itself and against a copy moved within tolerance, and reject
one moved beyond it, one with a list entry missing, and one with a changed identifier,
naming the field. Exit 0 when all hold; prints one line per failed expectation."""

import copy
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(ref, cand, tmp):
    paths = []
    for i, v in enumerate([ref, cand]):
        p = os.path.join(tmp, f"{i}.json")
        with open(p, "w", encoding="utf-8") as f:
            json.dump(v, f)
        paths.append(p)
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "compare_reports.py"), *paths], capture_output=True, text=True
    )
    return r.returncode, r.stdout + r.stderr


def main():
    reports = sorted(glob.glob(os.path.join(sys.argv[1], "*.json")))
    if not reports:
        print(f"test_compare_reports: no reports in {sys.argv[1]}")
        return 1
    failed = 0

    def expect(what, got_rc, want_rc, out, must_name=None):
        nonlocal failed
        if got_rc != want_rc or (must_name and must_name not in out):
            failed += 1
            print(f"FAIL {what}: exit {got_rc} (wanted {want_rc}){f', should name {must_name}' if must_name else ''}:\n{out}")

    with tempfile.TemporaryDirectory() as tmp:
        for path in reports:
            name = os.path.basename(path)
            with open(path, encoding="utf-8") as f:
                rep = json.load(f)
            layer = rep["layers"][len(rep["layers"]) // 2]
            idx = rep["layers"].index(layer)
            rc, out = run(rep, rep, tmp)
            expect(f"{name} vs itself", rc, 0, out, "SAME")
            near = copy.deepcopy(rep)
            near["layers"][idx]["attn_mass"] *= 1 + 1e-5
            rc, out = run(rep, near, tmp)
            expect(f"{name} moved by 1e-5", rc, 0, out)
            far = copy.deepcopy(rep)
            far["layers"][idx]["attn_mass"] = far["layers"][idx]["attn_mass"] * 1.01 + 1e-3
            rc, out = run(rep, far, tmp)
            expect(f"{name} moved by 1%", rc, 1, out, f"$.layers[{idx}].attn_mass")
            short = copy.deepcopy(rep)
            short["layers"].pop()
            rc, out = run(rep, short, tmp)
            expect(f"{name} one layer fewer", rc, 1, out, "$.layers: ")
            ident = copy.deepcopy(rep)
            ident["layers"][idx]["layer"] += 100
            rc, out = run(rep, ident, tmp)
            expect(f"{name} identifier changed", rc, 1, out, f"$.layers[{idx}].layer")
        rc, out = run(rep, rep, tmp)
        bad = os.path.join(tmp, "broken.json")
        with open(bad, "w", encoding="utf-8") as f:
            f.write("{ not json")
        r = subprocess.run([sys.executable, os.path.join(HERE, "compare_reports.py"), bad, bad], capture_output=True, text=True)
        expect("unreadable input", r.returncode, 2, r.stderr, "broken.json")
    print(f"test_compare_reports: {len(reports)} report(s), {'all expectations hold' if not failed else f'{failed} failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
