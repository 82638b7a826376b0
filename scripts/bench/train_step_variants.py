"""Eager-PyTorch rearrangements of one training step, timed side by side (issue 17).

Before writing fused kernels (crates/sinkrep-model/csrc/fused.cpp) we asked whether the
training step could get faster by rearranging eager libtorch ops, which sinkrep could do
through tch without C++. This script times, in one process and alternating, the plain
step of `torch_train_step.py`'s architecture against:

- rms_norm   `F.rms_norm` instead of the written-out x * rsqrt(mean(x^2) + eps) * w
- qkv        one fused QKV matmul (weights concatenated per step), split after
- gate_up    one fused gate/up matmul, split after
- attn       explicit attention (baddbmm with the causal bias, softmax, bmm) instead of SDPA
- micro4     the batch as 4 micro-batches of 4 sequences (gradient accumulation), for
             cache locality
- bound      an upper bound for fusing RMSNorm, RoPE and SwiGLU: each replaced by a single
             multiply (not the same function; timing only)

Prints a markdown table (median ms per step over the last steps of each run, median over
runs, speed-up against plain). Usage: train_step_variants.py [--model small|subject]
[--runs 3] [--steps 30]. Standard PyTorch only; one intra-op thread.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_train_step as T  # noqa: E402  (sizes, and the subject's from claim.toml)


def step_fn(variant):
    D, H, DH, FF, SEQ, EPS = T.D, T.HEADS, T.HEAD_DIM, T.FF, T.SEQ, T.EPS
    rope = T.Rope(SEQ, DH)
    bias = torch.zeros(SEQ, SEQ).masked_fill(torch.ones(SEQ, SEQ, dtype=torch.bool).triu(1), float("-inf"))

    def rms(x, w):
        if variant == "rms_norm":
            return F.rms_norm(x, (D,), w, EPS)
        if variant == "bound":
            return x * w
        return T.rms_norm(x, w)

    def rot(x):
        return x * 1.0001 if variant == "bound" else rope(x)

    def attend(q, k, v):
        if variant == "attn":
            b = q.shape[0]
            s = torch.baddbmm(bias.expand(b * H, SEQ, SEQ), q.reshape(-1, SEQ, DH),
                              k.reshape(-1, SEQ, DH).transpose(-2, -1), alpha=1 / math.sqrt(DH))
            return (s.softmax(-1) @ v.reshape(-1, SEQ, DH)).view(b, H, SEQ, DH)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / math.sqrt(DH))

    def block(blk, x):
        b, t, _ = x.shape
        h = rms(x, blk.attn_norm)
        if variant == "qkv":
            q, k, v = F.linear(h, torch.cat([blk.wq, blk.wk, blk.wv], 0)).split(D, -1)
        else:
            q, k, v = F.linear(h, blk.wq), F.linear(h, blk.wk), F.linear(h, blk.wv)
        q, k, v = (y.reshape(b, t, H, DH).transpose(1, 2) for y in (q, k, v))
        z = attend(rot(q), rot(k), v)
        x = x + F.linear(z.transpose(1, 2).reshape(b, t, H * DH), blk.wo)
        h = rms(x, blk.ffn_norm)
        if variant == "gate_up":
            g, u = F.linear(h, torch.cat([blk.w_gate, blk.w_up], 0)).split(FF, -1)
        else:
            g, u = F.linear(h, blk.w_gate), F.linear(h, blk.w_up)
        act = g * u if variant == "bound" else F.silu(g) * u
        return x + F.linear(act, blk.w_down)

    def loss(model, x, y):
        h = F.embedding(x, model.tok_embd)
        for blk in model.blocks:
            h = block(blk, h)
        logits = F.linear(rms(h, model.out_norm), model.tok_embd)
        return F.cross_entropy(logits.reshape(-1, T.VOCAB), y.reshape(-1))

    return loss


def time_variant(variant, steps):
    torch.manual_seed(0)
    model = T.Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = step_fn(variant)
    x = torch.randint(0, T.VOCAB, (T.BATCH, T.SEQ))
    y = torch.randint(0, T.VOCAB, (T.BATCH, T.SEQ))
    micro = 4 if variant == "micro4" else 1
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        for xs, ys in zip(x.chunk(micro), y.chunk(micro)):
            l_ = loss_fn(model, xs, ys) / micro
            l_.item()
            l_.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[steps // 3:])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["small", "subject"], default="subject")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    if a.model == "subject":
        T.use_subject()
    torch.set_num_threads(1)
    variants = ["plain", "rms_norm", "qkv", "gate_up", "attn", "micro4", "bound"]
    res = {v: [] for v in variants}
    for _ in range(a.runs):
        for v in variants:
            res[v].append(time_variant(v, a.steps))
    base = statistics.median(res["plain"])
    print(f"model {a.model} (d_model {T.D}, {T.LAYERS} layers, seq {T.SEQ}, batch {T.BATCH}); torch "
          f"{torch.__version__}, 1 thread, median of {a.runs} runs x last {a.steps - a.steps // 3} steps\n")
    print("| variant | ms/step | speed-up vs plain |")
    print("|---|---|---|")
    for v in variants:
        m = statistics.median(res[v])
        print(f"| {v} | {1e3 * m:.2f} | {base / m:.3f}x |")


if __name__ == "__main__":
    main()
