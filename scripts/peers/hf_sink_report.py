#!/usr/bin/env python3
"""Independent HF-transformers oracle for `sinkrep analyze --json`: the per-layer sink report.

Run with the peers venv: PY=$(scripts/peers/setup.sh); $PY scripts/peers/hf_sink_report.py ...
Not a project dependency: it exists so the Rust numbers can be checked against a separate
implementation (HF's GGUF loader, its own RoPE/GQA/eager attention). Definitions are
those of crates/sinkrep-analysis (the paper's, arXiv 2605.06611); each field is computed
in analyze().
"""
import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here: fail fast instead of retrying
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")  # HF's GGUF de-quantisation bar would bury the timing lines

import torch

PROG = "hf_sink_report"
M64 = (1 << 64) - 1


def die(msg):
    sys.exit(f"{PROG}: error: {msg}")


def splitmix_ids(n, t, seed, vocab):
    """Random token ids, bit-identical to the Rust side: splitmix64(state=seed), N*T draws in
    row-major order, id = z % vocab."""
    state, rows = seed, []
    for _ in range(n):
        row = []
        for _ in range(t):
            state = (state + 0x9E3779B97F4A7C15) & M64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            z ^= z >> 31
            row.append(z % vocab)
        rows.append(row)
    return rows


def load_ids_file(path):
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read ids file {path}: {e}")
    ok = isinstance(rows, list) and rows and all(isinstance(r, list) and r for r in rows)
    if not ok or not all(type(x) is int and x >= 0 for r in rows for x in r):
        die(f"{path} must be a non-empty JSON list of non-empty lists of token ids (ints >= 0)")
    if len({len(r) for r in rows}) != 1:
        die(f"{path}: all sequences must have the same length (no padding here)")
    return rows


def combine_var(st, x):
    """Running per-(t, c) mean and sum of squared deviations across sequences (Chan et al.),
    in float64, so batching does not change the variance and no N*T*576 tensor is kept."""
    nb, mb = x.shape[0], x.mean(0)
    m2b = ((x - mb) ** 2).sum(0)
    if st is None:
        return [nb, mb, m2b]
    n, m, m2 = st
    d, tot = mb - m, n + nb
    return [tot, m + d * (nb / tot), m2 + m2b + d * d * (n * nb / tot)]


def analyze(model, ids, K, eps, batch):
    cfg = model.config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    N, T = ids.shape
    f64 = torch.float64

    # Capture points. z = value-aggregation output (input of o_proj, heads concatenated);
    # m = FFN intermediate act(gate)*up (input of down_proj); h = raw residual after each layer.
    # h comes from a hook because HF's last hidden_states entry has the final norm applied.
    cap, hooks = {}, []
    for l, layer in enumerate(model.model.layers):
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(
            lambda mod, a, l=l: cap.__setitem__(("z", l), a[0])))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(
            lambda mod, a, l=l: cap.__setitem__(("m", l), a[0])))
        hooks.append(layer.register_forward_hook(
            lambda mod, a, o, l=l: cap.__setitem__(("h", l), o[0] if isinstance(o, tuple) else o)))

    mass = torch.zeros(L, dtype=f64)              # sum of A[i, K] over seqs, heads, i > K
    alpha = torch.zeros(N, L, H, dtype=f64)       # alpha_K per (sequence, layer, head)
    zstat = [None] * L                            # N >= 2: running variance across sequences
    zone = [None] * L                             # N == 1: z[0] itself
    dom, mx_sink, mx_oth = (torch.zeros(L, dtype=f64) for _ in range(3))
    msum = None                                   # sum over seqs of m[:, K, :], per layer
    head = None
    with torch.no_grad():
        for s in range(0, N, batch):
            x = ids[s:s + batch]
            b = x.shape[0]
            # logits_to_keep=1: only the last position's logits are reported, skip the rest.
            out = model(input_ids=x, output_attentions=True, output_hidden_states=True,
                        logits_to_keep=1, use_cache=False)
            if s == 0:
                head = out.logits[0, -1].float()
                for l in range(L - 1):  # the hook and HF's hidden_states must agree below the top
                    if not torch.equal(cap[("h", l)], out.hidden_states[l + 1]):
                        die(f"layer {l}: decoder-layer hook output differs from hidden_states[{l + 1}]")
            if msum is None:
                msum = torch.zeros(L, cap[("m", 0)].shape[-1], dtype=f64)
            for l in range(L):
                col = out.attentions[l][..., K].to(f64)          # [b, H, T]: A[i, K] for each query i
                mass[l] += col[:, :, K + 1:].sum()
                alpha[s:s + b, l] = col[:, :, K:].mean(-1)
                z = cap[("z", l)].to(f64)
                if N >= 2:
                    zstat[l] = combine_var(zstat[l], z)
                else:
                    zone[l] = z[0]
                a = cap[("h", l)].to(f64).abs()                  # [b, T, D]
                hk = a[:, K]
                dom[l] += (hk.amax(-1) / hk.mean(-1)).sum()
                mx_sink[l] += hk.amax(-1).sum()
                mx_oth[l] += torch.cat([a[:, :K], a[:, K + 1:]], 1).amax((1, 2)).sum()
                msum[l] += cap[("m", l)][:, K].to(f64).sum(0)
            cap.clear()
    for hk_ in hooks:
        hk_.remove()

    layers = []
    for l in range(L):
        if N >= 2:
            n, _, m2 = zstat[l]
            v = (m2 / n).mean(-1)                                # [T]: population var, channel mean
        else:
            v = zone[l].var(-1, unbiased=False)                  # [T]: var across the channels
        others = torch.cat([v[:K], v[K + 1:]])
        mean_m = msum[l] / N
        top = mean_m.abs().topk(5).indices.tolist()
        layers.append({
            "layer": l,
            "attn_mass": float(mass[l] / (N * H * (T - 1 - K))),
            "sink_frac": float((alpha[:, l] > eps).to(f64).mean()),
            "agg_var_ratio": float(v[K] / others.mean()),
            "dom_ratio": float(dom[l] / N),
            "max_abs_sink": float(mx_sink[l] / N),
            "max_abs_others": float(mx_oth[l] / N),
            "top_ffn_channels": [{"channel": c, "value": float(mean_m[c])} for c in top],
        })
    sink = 100.0 * float((alpha > eps).to(f64).mean())
    return layers, head, sink


def main():
    p = argparse.ArgumentParser(description="Per-layer attention-sink report with HF transformers (oracle for sinkrep analyze --json).")
    p.add_argument("--model", required=True, help="path to the GGUF file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="one sequence: this text, tokenised by the GGUF's tokenizer")
    src.add_argument("--random", type=int, metavar="N", help="N random-token sequences (splitmix64)")
    src.add_argument("--ids-file", help="JSON list of lists of token ids")
    p.add_argument("--seq-len", type=int, help="T, with --random")
    p.add_argument("--seed", type=int, help="u64 seed, with --random")
    p.add_argument("--sink-pos", type=int, default=0, help="K, the position examined (default 0)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--batch", type=int, default=25, help="sequences per forward pass (default 25)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="weights and activations (default float32; bfloat16 is how an HF user runs a "
                        "model fast, every tensor in bf16: compare with sinkrep --precision bf16)")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    a = p.parse_args()

    if a.random is not None and (a.seq_len is None or a.seed is None):
        die("--random needs --seq-len and --seed")
    if a.random is None and (a.seq_len is not None or a.seed is not None):
        die("--seq-len and --seed go with --random only")
    if a.seed is not None and not 0 <= a.seed <= M64:
        die("--seed must be in [0, 2^64)")
    if a.random is not None and (a.random < 1 or a.seq_len < 2):
        die("--random must be >= 1 and --seq-len >= 2")
    if a.batch < 1:
        die("--batch must be >= 1")
    if not os.path.isfile(a.model):
        die(f"model file not found: {a.model}")
    d, name = os.path.split(os.path.abspath(a.model))
    rows = load_ids_file(a.ids_file) if a.ids_file else None

    from transformers import AutoModelForCausalLM, AutoTokenizer
    t0, c0 = time.perf_counter(), time.process_time()  # CPU time too: wall time on a shared 2-core box is noisy
    try:
        # GGUF is de-quantised (to f32, then --dtype); eager attention so that attention maps
        # are returned. Every reduction below is in f64 whatever the dtype.
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, attn_implementation="eager",
                                                     dtype=getattr(torch, a.dtype)).eval()
    except Exception as e:  # one line, not a traceback: bad/corrupt/unsupported GGUF
        die(f"cannot load {a.model} with transformers: {type(e).__name__}: {e}".splitlines()[0])
    t_model, c_model = time.perf_counter() - t0, time.process_time() - c0
    vocab = model.config.vocab_size

    tok, t_tok = None, 0.0

    def tokenizer():  # building it from GGUF metadata costs seconds: only when text is involved
        nonlocal tok, t_tok
        if tok is None:
            t1 = time.perf_counter()
            tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
            t_tok = time.perf_counter() - t1
        return tok

    if a.text is not None:
        # BOS as the GGUF says (add_bos_token: false for SmolLM2, true for Gemma-3).
        rows = [tokenizer()(a.text)["input_ids"]]
    elif a.random is not None:
        rows = splitmix_ids(a.random, a.seq_len, a.seed, vocab)
    elif max(map(max, rows)) >= vocab:
        die(f"{a.ids_file}: token id {max(map(max, rows))} is outside the vocabulary (size {vocab})")
    if len(rows) == 1:
        tokenizer()  # next_token.text is reported for a single sequence
    ids = torch.tensor(rows, dtype=torch.long)
    N, T = ids.shape
    K = a.sink_pos
    if not 0 <= K <= T - 2:
        die(f"--sink-pos must be in [0, T-2] = [0, {T - 2}] (T = {T}: queries after it are needed)")
    print(f"{PROG}: load: model {t_model:.2f}s (cpu {c_model:.2f}s)" + (f", tokenizer {t_tok:.2f}s" if tok else "")
          + f" (torch threads {torch.get_num_threads()})", file=sys.stderr)

    t2, c2 = time.perf_counter(), time.process_time()
    layers, head, sink = analyze(model, ids, K, a.eps, a.batch)
    t_an, c_an = time.perf_counter() - t2, time.process_time() - c2

    rep = {"n_sequences": N, "n_tokens": T, "sink_pos": K, "eps": a.eps}
    if a.dtype == "bfloat16":
        rep["precision"] = "bf16"  # as sinkrep's report names it
    if N == 1:
        nid = int(head.argmax())
        rep["next_token"] = {"id": nid, "text": tok.decode([nid])}
    rep["last_logits_head"] = [float(v) for v in head[:16]]
    if N == 1:
        top = head.topk(10)
        rep["last_logits_top"] = [[int(i), float(v)] for v, i in zip(top.values, top.indices)]
    rep["layers"] = layers
    rep["sink_metric"] = {"eps": a.eps, "value": sink}
    text = json.dumps(rep, indent=1)
    if a.out:
        try:
            with open(a.out, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            die(f"cannot write {a.out}: {e}")
    else:
        print(text)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{PROG}: analysis of {N}x{T} tokens: {t_an:.2f}s (cpu {c_an:.2f}s); peak RSS {rss:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
