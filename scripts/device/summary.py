#!/usr/bin/env python3
"""summary.md of a scripts/device/gpu-check.sh run: the step table, the CUDA-vs-CPU
comparisons, the smoke verify verdict and a BENCHMARKS section (markdown rows ready for
BENCHMARKS.md). Reads only what gpu-check.sh left in --work and --out; standard library
only (the device image's python3 runs it). A missing file leaves its rows out or marks
them "not measured"; it is never an error."""

import argparse
import csv
import glob
import json
import os
import statistics
import time


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def read_json(path):
    text = read(path)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def rate(gflops):
    return f"{gflops / 1000:.1f} TFLOP/s" if gflops >= 1000 else f"{gflops:.1f} GFLOP/s"


def steps_table(work):
    rows = ["| step | status | seconds |", "|---|---|---:|"]
    for line in (read(os.path.join(work, "steps.tsv")) or "").splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append(f"| {parts[0]} | {parts[1]} | {parts[2]} |")
    return rows


def gu_rows(work, device):
    by = {}
    for line in (read(os.path.join(work, "gu.tsv")) or "").splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            by.setdefault(parts[0], []).append(float(parts[2]))
    return [
        f"| Gu et al. protocol, 100 x 64 random tokens, {p} ({device}) | "
        f"{statistics.median(v):.2f} s median of {len(v)} (min {min(v):.2f}), whole command incl. model load |"
        for p, v in by.items()
    ]


def last_timing_row(path):
    """The last row of a training run's timing.csv (step, elapsed_s, step_s, tokens_per_s),
    parsed; None when the file is missing, empty or its last row torn (a run stopped
    mid-write)."""
    try:
        with open(path, encoding="utf-8") as f:
            recs = list(csv.DictReader(f))
        if not recs:
            return None
        r = recs[-1]
        return {"step": int(r["step"]), "elapsed_s": float(r["elapsed_s"]), "tokens_per_s": float(r["tokens_per_s"])}
    except (OSError, TypeError, ValueError, KeyError):
        return None


def training_runs(root):
    """(last timing row, config) of every training run under root, hidden folders included
    (glob's ** skips them, and trained subjects live in .shared/). A run whose timing.csv
    has no whole row yet counts with step 0."""
    runs = []
    for d, _, names in os.walk(root):
        if "timing.csv" in names:
            last = last_timing_row(os.path.join(d, "timing.csv")) or {"step": 0, "elapsed_s": 0.0, "tokens_per_s": 0.0}
            runs.append((last, read_json(os.path.join(d, "config.json")) or {}))
    return runs


def run_rows(work, scale):
    rows = []
    for d in sorted(glob.glob(os.path.join(work, "runs", scale, "*"))):
        rid = os.path.basename(d)
        m = read_json(os.path.join(d, "manifest.json"))
        if m:
            verdict = m.get("verdict")
            rows.append(
                f"| {scale} scale: {rid} | {m['timing']['wall_seconds']:.1f} s, "
                f"verdict {verdict} ({m.get('checks_passed')}/{m.get('checks_total')} checks) |"
            )
        else:
            rows.append(f"| {scale} scale: {rid} | incomplete (stopped at the budget or failed) |")
    # The subjects every replication shares: trained once per invocation in runs/<scale>/.shared.
    runs = training_runs(os.path.join(work, "runs", scale, ".shared"))
    if runs:
        done = sum(1 for last, cfg in runs if "steps" in cfg and last["step"] >= cfg["steps"])
        steps = sorted(last["step"] for last, _ in runs)
        fastest = max(last["tokens_per_s"] for last, _ in runs)
        rows.append(
            f"| {scale} scale: training runs (shared subjects) | {len(runs)} started, {done} finished; "
            f"steps reached {steps[0]}..{steps[-1]}, fastest last step {fastest:,.0f} tokens/s |"
        )
    return rows


def jobs_rows(work):
    """Claim 4's gpu-scale training with J runs at a time for a fixed time (gpu-check.sh
    step 4b): runs started, steps each, tokens/s in aggregate over the probe's seconds."""
    rows = []
    for j in (1, 4, 16):
        runs = training_runs(os.path.join(work, f"jobs-{j}"))
        if not runs:
            continue
        steps = [last["step"] for last, _ in runs]
        tokens = sum(last["step"] * cfg.get("batch_size", 0) * cfg.get("seq_len", 0) for last, cfg in runs)
        last = max(row["elapsed_s"] for row, _ in runs)
        rate = f"{tokens / last:,.0f} tokens/s in aggregate over {last:.0f} s" if last > 0 else "no step finished"
        rows.append(f"| claim 4 gpu subject, {j} run(s) at a time | {len(runs)} run(s) started, steps "
                    f"{sorted(steps, reverse=True)}; {rate} |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", default=os.environ.get("OUT", ""))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=int, default=0)
    a = ap.parse_args()
    env = read_json(os.path.join(a.work, "env.json")) or {}
    peak = read_json(os.path.join(a.work, "matmul.json")) or {}
    name = env.get("cuda_device_name") or ("CPU" if a.device == "cpu" else "unknown device")
    out = [
        f"# gpu-check: {name}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"sinkrep {env.get('git_revision', '?')} (dirty: {env.get('git_dirty')}), libtorch "
        f"{env.get('libtorch_version', '?')}, tch {env.get('tch_version', '?')}; CUDA available: "
        f"{env.get('cuda_available')} ({env.get('cuda_library', '?')}), cuDNN: {env.get('cudnn_available')}; device {a.device}; "
        f"{a.seconds} s in all.",
        "",
        "## Steps",
        "",
        *steps_table(a.work),
        "",
        "## Claims 1-3 on SmolLM2: device vs CPU reports (rtol 1e-3, atol 1e-6)",
        "",
    ]
    cmp_lines = [
        ln
        for ln in (read(os.path.join(a.out, "compare.txt")) or "").splitlines()
        if ln.startswith(("SAME", "DIFFERENT", "---")) or " failed" in ln
    ]
    out += [f"    {ln}" for ln in cmp_lines] or ["not run"]
    out += ["", "## Smoke scale on the device, verified against data/baselines/smoke", ""]
    verify = (read(os.path.join(a.out, "verify-smoke.txt")) or "").rstrip().splitlines()
    out += [f"    {ln}" for ln in verify[-12:]] or ["not run"]
    out += ["", "## BENCHMARKS (rows for BENCHMARKS.md)", "", "| what | measured |", "|---|---|"]
    for r in peak.get("matmul_peak", {}).get("rates", []):
        out.append(f"| matmul {r['dtype']} {r['n']}^3 ({r['device']}) | {rate(r['gflops_best'])} best, {rate(r['gflops_median'])} median |")
    err = peak.get("matmul_peak", {}).get("f32_rel_error_vs_f64")
    if err is not None:
        out.append(f"| f32 matmul error vs f64 (1024^3) | {err:.1e} ({'TF32 ON' if err > 1e-4 else 'TF32 off'}) |")
    out += gu_rows(a.work, a.device)
    out += jobs_rows(a.work)
    out += run_rows(a.work, "smoke")
    out += run_rows(a.work, "gpu")
    print("\n".join(out))


if __name__ == "__main__":
    main()
