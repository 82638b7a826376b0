"""Writes the wall-time record of one `just replicate-all`: `<runs>/replicate-all-timing.json`.

Called by the justfile's replicate-all recipe at its end, with the seconds of each phase it
timed (`name=seconds` arguments, in order). Adds what makes absolute times comparable
(CPU model, ISA flags, logical CPUs, git revision) and, per replication, the wall time its
run manifest recorded. `just bench-compare` reads the record for its replicate-all target.
Written to a temporary file and renamed, so a reader never sees half a record.

usage: replicate_timing.py RUNS_DIR SCALE_OR_EMPTY STARTED_UTC ARGS_STRING name=seconds...
"""
import datetime
import glob
import json
import os
import subprocess
import sys

PROG = "replicate_timing"


def die(msg):
    sys.exit(f"{PROG}: error: {msg}")


def cpuinfo():
    model, flags = "?", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    isa = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return model, isa


def git(*args):
    r = subprocess.run(["git", *args], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    return r.stdout.strip() if r.returncode == 0 else ""


def main():
    if len(sys.argv) < 5:
        die("usage: replicate_timing.py RUNS_DIR SCALE_OR_EMPTY STARTED_UTC ARGS name=seconds...")
    runs, scale, started, args = sys.argv[1:5]
    phases = []
    for kv in sys.argv[5:]:
        name, _, sec = kv.partition("=")
        try:
            phases.append({"name": name, "seconds": float(sec)})
        except ValueError:
            die(f"phase `{kv}`: expected name=seconds")
    # The scale the run resolved (cpu, or gpu with CUDA) when none was given: that of the
    # newest manifest under RUNS_DIR.
    manifests = sorted(glob.glob(os.path.join(runs, "*", "*", "manifest.json")), key=os.path.getmtime)
    if not scale and manifests:
        scale = os.path.basename(os.path.dirname(os.path.dirname(manifests[-1])))
    claims = {}
    for m in glob.glob(os.path.join(runs, scale or "?", "*", "manifest.json")):
        try:
            with open(m) as f:
                d = json.load(f)
            claims[d.get("id", os.path.basename(os.path.dirname(m)))] = round(d["timing"]["wall_seconds"], 1)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    model, isa = cpuinfo()
    record = {
        "schema": 1,
        "command": f"just replicate-all {args}".strip(),
        "scale": scale or None,
        "started_utc": started,
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_seconds": round(sum(p["seconds"] for p in phases), 1),
        "phases": phases,
        "replications_wall_seconds": dict(sorted(claims.items())),
        "cpu_model": model,
        "cpu_isa": isa,
        "logical_cpus": os.cpu_count(),
        # As the recipe found the tree at its start (it rewrites REPORT.md and figures/).
        "git_rev": os.environ.get("SINKREP_TIMING_GIT_REV") or git("rev-parse", "HEAD"),
        "git_dirty": (os.environ["SINKREP_TIMING_GIT_DIRTY"].strip() not in ("", "0"))
        if "SINKREP_TIMING_GIT_DIRTY" in os.environ else bool(git("status", "--porcelain")),
        # Whether `verify` passed (the recipe's exit status of it; null when not given):
        # a fast run whose results drifted has not reproduced anything.
        "verify_passed": (os.environ["SINKREP_TIMING_VERIFY_RC"].strip() == "0")
        if os.environ.get("SINKREP_TIMING_VERIFY_RC", "").strip() else None,
    }
    os.makedirs(runs, exist_ok=True)
    path = os.path.join(runs, "replicate-all-timing.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    mins = record["wall_seconds"] / 60
    parts = ", ".join("%s %.0fs" % (p["name"], p["seconds"]) for p in phases)
    verified = {True: "verify passed", False: "verify FAILED", None: "verify not run"}[record["verify_passed"]]
    print(f"replicate-all: {mins:.1f} min wall ({parts}), {verified}; record: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
