"""Moves one metric of a copied smoke baseline far beyond any tolerance (x1.5 + 1) and
prints its name: `just test` then checks that `sinkrep verify` fails and names it.
The first replication (sorted) and its first finite metric (sorted) are chosen, so the
check is deterministic."""
import json
import math
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
for metrics in sorted(root.glob("*/metrics.json")):
    data = json.loads(metrics.read_text())
    flat = data.get("metrics", data)
    for name in sorted(flat):
        v = flat[name]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            flat[name] = v * 1.5 + 1.0
            metrics.write_text(json.dumps(data, indent=2, sort_keys=True))
            print(name)
            sys.exit(0)
sys.exit(f"no finite metric found under {root}")
