#!/usr/bin/env python3
"""HF transformers on an HF checkpoint folder (e.g. one `sinkrep export` wrote): the token
ids of a text and the last position's logits, as JSON, for comparison with sinkrep.

Run with the peers venv: PY=$(scripts/peers/setup.sh); $PY scripts/peers/hf_folder_logits.py DIR
Not a project dependency. With --compare FILE (a JSON list of sinkrep's last-position
logits, all of them) it prints the max |difference| too.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--text", default="The capital of France is")
    ap.add_argument("--compare", help="JSON list of sinkrep's last-position logits")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(a.dir)
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = tok(a.text, add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    top = torch.topk(logits, 10)
    out = {
        "transformers": __import__("transformers").__version__,
        "ids": ids,
        "next_token": tok.decode([int(top.indices[0])]),
        "logits_head": [float(x) for x in logits[:16]],
        "top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)],
    }
    if a.compare:
        with open(a.compare) as f:
            theirs = torch.tensor(json.load(f), dtype=torch.float64)
        if theirs.shape != logits.shape:
            sys.exit(f"--compare has {theirs.shape[0]} logits, the model {logits.shape[0]}")
        out["max_abs_diff"] = float((theirs - logits).abs().max())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
