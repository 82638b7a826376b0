#!/usr/bin/env python3
"""Pre-study for issue 14: in which regime does a small LLaMA-style decoder trained on
Bigram-Backcopy (Guo et al. 2024, arXiv 2410.13835) form an attention sink on position 0?

Plain PyTorch, one thread, seeded; the same command writes the same CSV.

Task (generated on the fly, seeded):
  * vocab V ordinary tokens 0..V-1 (+ BOS id V when --bos); the first `triggers` ids are triggers.
  * bigram table: each token has `succ` successors (drawn uniformly without replacement from the
    V ordinary tokens) with Dirichlet(`alpha`) weights; smaller succ/alpha = sharper bigram.
  * x_0 = BOS (fixed) or a uniformly random non-trigger token (no BOS);
    if x_{t-1} is a trigger then x_t = x_{t-2} (back-copy), else x_t ~ bigram(x_{t-1}).
    No two triggers are ever adjacent (induction from a non-trigger x_0), so copies are
    never triggers.
Loss: ordinary next-token cross-entropy on ALL positions t=1..T-1 (bigram positions are
stochastic, copy positions deterministic). Copy accuracy = argmax accuracy on positions whose
previous token is a trigger.

Model: token embedding, L pre-norm blocks (RMSNorm -> causal MHA with RoPE -> residual;
RMSNorm -> SwiGLU MLP (hidden 4d) -> residual), final RMSNorm, untied LM head, no biases.

Metrics on a fixed held-out set of 100 sequences (Gu et al.: T=64, 100 sequences):
  sink0      Sink_0^0.3: % of (layer, head) with alpha_0 = mean over queries i>0 of
             attention(i -> 0) above 0.3 (paper.md, Gu et al.)
  attn0      mean alpha_0 over all (layer, head)
  attn0_max  max alpha_0 over (layer, head)
  attn0_nontrig / attn0_trig   alpha_0 of the max-alpha_0 head split by query type (query token
             is not / is a trigger): the dormant/active head picture of Guo et al.
  dom0       DomRatio(h_0) = max_j |h_j| / mean_k |h_k| (paper.md) of the residual stream at
             position 0 after the last block (before the final norm); dom0_maxl = max over blocks
  dom_rest   same, mean over positions i>0
  maxabs0 / maxabs_rest   max_j |h_0,j| vs mean over i>0 of max_j |h_i,j| (last block)
  loss, copy_acc

Usage:
  python3 scripts/research/bigram_backcopy_search.py --grid main \
      --out docs/research/bigram_backcopy_grid.csv
  (resumes: configs already in the CSV are skipped; delete it to rerun from scratch)
  python3 scripts/research/bigram_backcopy_search.py --grid main --list   # print the grid
  python3 scripts/research/bigram_backcopy_search.py --one bos=1,layers=1,d=64,heads=1,lr=1e-2,wd=0.5
"""
import argparse
import csv
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

DEFAULTS = dict(
    bos=1, layers=1, d=64, heads=2, lr=1e-2, wd=0.1, steps=2000, V=64, triggers=10,
    succ=3, alpha=0.5, T=64, batch=32, eval_every=100, seed=0, warmup=100,
)


# ----------------------------------------------------------------------------- data
class BigramBackcopy:
    def __init__(self, V, triggers, succ, alpha, bos, seed):
        g = torch.Generator().manual_seed(1000 + seed)
        self.V, self.ntrig, self.bos = V, triggers, bos
        self.bos_id = V
        P = torch.zeros(V, V)
        for a in range(V):
            nxt = torch.randperm(V, generator=g)[:succ]
            w = torch.distributions.Dirichlet(torch.full((succ,), float(alpha)))
            # Dirichlet sampling through the generator: gamma via -log(U) only valid for alpha=1,
            # so draw gammas with torch._standard_gamma after seeding the global RNG locally.
            with torch.random.fork_rng():
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
                p = w.sample()
            P[a, nxt] = p + 1e-9
        self.P = P / P.sum(1, keepdim=True)
        self.C = self.P.cumsum(1)
        self.C[:, -1] = 1.0 + 1e-6
        self.is_trig = torch.zeros(V + 1, dtype=torch.bool)
        self.is_trig[:triggers] = True

    def sample(self, B, T, g):
        x = torch.empty(B, T, dtype=torch.long)
        if self.bos:
            x[:, 0] = self.bos_id
            # position 1: uniform over non-triggers (the token a trigger could copy is then
            # never BOS)
            x[:, 1] = torch.randint(self.ntrig, self.V, (B,), generator=g)
            start = 2
        else:
            x[:, 0] = torch.randint(self.ntrig, self.V, (B,), generator=g)
            start = 1
        u = torch.rand(B, T, generator=g)
        for t in range(start, T):
            prev = x[:, t - 1]
            nxt = torch.searchsorted(self.C[prev], u[:, t:t + 1]).squeeze(1)
            trig = self.is_trig[prev]
            x[:, t] = torch.where(trig, x[:, t - 2], nxt)
        return x


# ----------------------------------------------------------------------------- model
class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return self.w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def rope(x, cos, sin):  # x: B H T hd
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.hd = h, d // h
        self.n1, self.n2 = RMSNorm(d), RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, 4 * d, bias=False)
        self.up = nn.Linear(d, 4 * d, bias=False)
        self.down = nn.Linear(4 * d, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, T, 3, self.h, self.hd).permute(2, 0, 3, 1, 4)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        a = s.masked_fill(mask, float("-inf")).softmax(-1)  # B H T T
        y = (a @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.o(y)
        n = self.n2(x)
        x = x + self.down(F.silu(self.gate(n)) * self.up(n))
        return x, a


class Model(nn.Module):
    def __init__(self, vocab, d, h, L, T):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(L))
        self.nf = RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        hd = d // h
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.arange(T).float()[:, None] * inv[None]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1),
                             persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, x, keep=False):
        T = x.shape[1]
        h = self.emb(x)
        attns, hs = [], []
        for b in self.blocks:
            h, a = b(h, self.cos[:T], self.sin[:T], self.mask[:T, :T])
            if keep:
                attns.append(a)
                hs.append(h)
        return self.head(self.nf(h)), attns, hs


# ----------------------------------------------------------------------------- eval
def dom(h):  # ... D -> ...
    a = h.abs()
    return a.max(-1).values / a.mean(-1)


@torch.no_grad()
def evaluate(model, xe, is_trig):
    logits, attns, hs = model(xe, keep=True)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), xe[:, 1:].reshape(-1))
    tq = is_trig[xe[:, :-1]]  # query position t-1 is a trigger -> target at t is a copy
    pred = logits[:, :-1].argmax(-1)
    copy_acc = (pred == xe[:, 1:])[tq].float().mean().item()
    alpha0 = []  # per (layer, head)
    per_q = []
    for a in attns:  # B H T T
        col = a[:, :, 1:, 0]  # queries i>0 attending to key 0: B H T-1
        alpha0.append(col.mean((0, 2)))
        per_q.append(col)
    alpha0 = torch.cat(alpha0)  # L*H
    allq = torch.cat(per_q, 1)  # B LH T-1
    j = int(alpha0.argmax())
    qtrig = is_trig[xe[:, 1:]]  # query token at i>0 is a trigger
    best = allq[:, j]
    aj = torch.cat(attns, 1)[:, j]  # B T T of the max-alpha_0 head
    Tn = aj.shape[-1]
    idx = torch.arange(1, Tn)
    prev = aj[:, idx, idx - 1]  # B T-1: attention i -> i-1
    selfa = aj[:, idx, idx]
    h = hs[-1]
    d_all = torch.stack([dom(x[:, 0]).mean() for x in hs])
    return dict(
        loss=loss.item(), copy_acc=copy_acc,
        sink0=100.0 * (alpha0 > 0.3).float().mean().item(),
        attn0=alpha0.mean().item(), attn0_max=alpha0.max().item(),
        attn0_nontrig=best[~qtrig].mean().item(), attn0_trig=best[qtrig].mean().item(),
        prev_nontrig=prev[~qtrig].mean().item(), self_nontrig=selfa[~qtrig].mean().item(),
        prev_trig=prev[qtrig].mean().item(),
        dom0=dom(h[:, 0]).mean().item(), dom0_maxl=d_all.max().item(),
        dom_rest=dom(h[:, 1:]).mean().item(),
        maxabs0=h[:, 0].abs().max(-1).values.mean().item(),
        maxabs_rest=h[:, 1:].abs().max(-1).values.mean().item(),
        alpha0_heads=" ".join(f"{v:.3f}" for v in alpha0.tolist()),
    )


# ----------------------------------------------------------------------------- run
def run(cfg, log=sys.stderr, on_row=None):
    c = dict(DEFAULTS, **cfg)
    torch.manual_seed(c["seed"])
    task = BigramBackcopy(c["V"], c["triggers"], c["succ"], c["alpha"], c["bos"], c["seed"])
    vocab = c["V"] + 1
    model = Model(vocab, c["d"], c["heads"], c["layers"], c["T"])
    decay = [p for p in model.parameters() if p.dim() == 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["wd"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / c["warmup"]))
    gtrain = torch.Generator().manual_seed(2000 + c["seed"])
    geval = torch.Generator().manual_seed(999_999)
    xe = task.sample(100, c["T"], geval)
    rows = []
    t0 = time.process_time()
    w0 = time.time()
    for step in range(c["steps"] + 1):
        if step % c["eval_every"] == 0:
            model.eval()
            m = evaluate(model, xe, task.is_trig)
            model.train()
            m.update(step=step, cpu_s=round(time.process_time() - t0, 2),
                     wall_s=round(time.time() - w0, 2))
            rows.append(m)
            if on_row is not None:
                on_row(m)
            print(f"  step {step:5d} loss {m['loss']:.3f} copy {m['copy_acc']:.2f} "
                  f"sink0 {m['sink0']:5.1f} a0 {m['attn0']:.3f} a0max {m['attn0_max']:.3f} "
                  f"(nt {m['attn0_nontrig']:.2f} tr {m['attn0_trig']:.2f} ntprev {m['prev_nontrig']:.2f} "
                  f"ntself {m['self_nontrig']:.2f} trprev {m['prev_trig']:.2f}) "
                  f"dom0 {m['dom0']:.1f}/{m['dom_rest']:.1f} max|h0| {m['maxabs0']:.1f}/"
                  f"{m['maxabs_rest']:.1f} cpu {m['cpu_s']:.0f}s", file=log, flush=True)
        if step == c["steps"]:
            break
        x = task.sample(c["batch"], c["T"], gtrain)
        logits, _, _ = model(x)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return c, rows


KEYS = ["bos", "layers", "d", "heads", "lr", "wd", "steps", "V", "triggers", "succ", "alpha",
        "T", "batch", "seed"]
METRICS = ["step", "loss", "copy_acc", "sink0", "attn0", "attn0_max", "attn0_nontrig",
           "attn0_trig", "prev_nontrig", "self_nontrig", "prev_trig", "dom0", "dom0_maxl", "dom_rest", "maxabs0", "maxabs_rest",
           "alpha0_heads"]  # timings go to a separate CSV so the grid CSV is reproducible


def cfg_id(c):
    return ("bos{bos}_L{layers}_d{d}_h{heads}_lr{lr:g}_wd{wd:g}_succ{succ}_a{alpha:g}_trig{triggers}"
            "_steps{steps}_s{seed}").format(**c)


def grid(name):
    g = []
    soft = dict(succ=8, alpha=1.0)  # soft bigram: 8 successors, Dirichlet(1) weights
    if name == "main":
        # Ordered by priority, because the run may be cut short by the time budget. The first
        # six were planned up front; the rest were re-prioritised after they showed sinks at
        # lr 3e-2 / wd 0.5 ("win") and lr 1e-2 / wd 0.1.
        base = dict(bos=1, layers=1, d=64, heads=1, lr=1e-2, wd=0.5, steps=1500, **soft)
        win = dict(base, lr=3e-2)
        g.append(base)
        g.append(dict(base, bos=0))                       # BOS question
        g.append(dict(base, succ=3, alpha=0.5))           # sharp bigram (the first probe's task)
        g.append(win)
        g.append(dict(base, wd=0.1))
        g.append(dict(base, wd=0.0))
        g.append(dict(win, bos=0))                        # BOS question at the fastest sink
        g.append(dict(win, seed=1))
        g.append(dict(win, seed=2))
        g.append(dict(win, bos=0, seed=1))
        g.append(dict(base, lr=3e-3))
        g.append(dict(win, layers=2))
        g.append(dict(win, heads=2))
        g.append(dict(win, succ=3, alpha=0.5))
        g.append(dict(base, bos=0, wd=0.1))
        g.append(dict(base, layers=2))
        g.append(dict(base, heads=2))
        g.append(dict(win, d=128))
        g.append(dict(win, bos=0, steps=3000))
        g.append(dict(base, wd=0.1, seed=1))
        for bos in (1, 0):                                # the rest of BOS x lr x wd
            for lr in (3e-3, 1e-2, 3e-2):
                for wd in (0.0, 0.1, 0.5):
                    g.append(dict(base, bos=bos, lr=lr, wd=wd))
        g.append(dict(base, bos=0, layers=2))
    elif name == "smoke":
        g.append(dict(bos=1, layers=1, d=64, heads=2, lr=1e-2, wd=0.1, steps=200))
    else:
        raise SystemExit(f"unknown grid {name}")
    return g


def summarize(path):
    """Markdown table: last evaluated step per config, first step with Sink_0 >= 30%."""
    with open(path) as f:
        rd = list(csv.DictReader(f))
    tpath = os.path.splitext(path)[0] + "_timing.csv"
    tim = {}
    if os.path.exists(tpath):
        with open(tpath) as f:
            for r in csv.DictReader(f):
                tim[(r["config"], r["step"])] = r
    by = {}
    for r in rd:
        by.setdefault(r["config"], []).append(r)
    print("| config | steps done | Sink_0 (%) | alpha_0 max | alpha_0 at non-trigger q | "
          "DomRatio h_0 / rest | max abs h_0 / rest | loss | copy acc | first step Sink_0>=30 "
          "(cpu s) | cpu s | wall s |")
    print("|" + "---|" * 13)
    for cid, rs in by.items():
        r = rs[-1]
        hit = next((x for x in rs if float(x["sink0"]) >= 30.0), None)
        hs = "-" if hit is None else "{} ({})".format(
            hit["step"], tim.get((cid, hit["step"]), {}).get("cpu_s", "?"))
        t = tim.get((cid, r["step"]), {})
        print(f"| {cid} | {r['step']}/{r['steps']} | {float(r['sink0']):.0f} | "
              f"{float(r['attn0_max']):.3f} | {float(r['attn0_nontrig']):.3f} | "
              f"{float(r['dom0']):.1f} / {float(r['dom_rest']):.1f} | "
              f"{float(r['maxabs0']):.1f} / {float(r['maxabs_rest']):.1f} | "
              f"{float(r['loss']):.3f} | {float(r['copy_acc']):.2f} | {hs} | "
              f"{t.get('cpu_s', '?')} | {t.get('wall_s', '?')} |")


def curves(path, steps=(0, 200, 400, 600, 800, 1000, 1200, 1500, 2000, 3000)):
    """Markdown table: alpha_0 of the strongest head vs step (a text stand-in for a figure)."""
    with open(path) as f:
        rd = list(csv.DictReader(f))
    by = {}
    for r in rd:
        by.setdefault(r["config"], {})[int(r["step"])] = float(r["attn0_max"])
    cols = [s for s in steps if any(s in v for v in by.values())]
    print("| config | " + " | ".join(str(s) for s in cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for cid, v in by.items():
        print(f"| {cid} | " + " | ".join(
            ("**%.2f**" % v[s] if v[s] > 0.3 else "%.2f" % v[s]) if s in v else ""
            for s in cols) + " |")


def parse_one(s):
    c = {}
    for kv in s.split(","):
        k, v = kv.split("=")
        c[k] = float(v) if k in ("lr", "wd", "alpha") else int(v)
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="main")
    ap.add_argument("--one", default=None, help="k=v,... run a single config (to --out)")
    ap.add_argument("--out", default="docs/research/bigram_backcopy_grid.csv")
    ap.add_argument("--limit", type=int, default=None, help="run at most N new configs")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--summarize", action="store_true", help="print a markdown table of --out")
    a = ap.parse_args()
    cfgs = [parse_one(a.one)] if a.one else grid(a.grid)
    seen, uniq = set(), []
    for cfg in cfgs:
        k = cfg_id(dict(DEFAULTS, **cfg))
        if k not in seen:
            seen.add(k)
            uniq.append(cfg)
    cfgs = uniq
    if a.summarize:
        summarize(a.out)
        print()
        curves(a.out)
        return
    if a.list:
        for i, cfg in enumerate(cfgs):
            print(i, cfg_id(dict(DEFAULTS, **cfg)))
        return
    done = set()
    if os.path.exists(a.out):  # resume: keep finished configs, drop rows of one cut short
        with open(a.out) as f:
            rd = list(csv.DictReader(f))
        done = {r["config"] for r in rd if int(r["step"]) == int(r["steps"])}
        if any(r["config"] not in done for r in rd):
            tpath = os.path.splitext(a.out)[0] + "_timing.csv"
            for path in (a.out, tpath):
                if not os.path.exists(path):
                    continue
                with open(path) as f:
                    lines = f.readlines()
                with open(path, "w") as f:
                    f.writelines([lines[0]] + [ln for ln in lines[1:]
                                               if ln.split(",", 1)[0] in done])
    new = 0
    for cfg in cfgs:
        c = dict(DEFAULTS, **cfg)
        cid = cfg_id(c)
        if cid in done:
            print(f"skip {cid} (in {a.out})", file=sys.stderr)
            continue
        if a.limit is not None and new >= a.limit:
            break
        print(f"run {cid}", file=sys.stderr, flush=True)
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        tpath = os.path.splitext(a.out)[0] + "_timing.csv"
        c = dict(DEFAULTS, **cfg)

        def on_row(r, c=c, cid=cid):  # stream rows so a run cut short keeps its curve
            for path, header, vals in (
                    (a.out, ["config"] + KEYS + METRICS,
                     [cid] + [c[k] for k in KEYS] + [
                         (f"{r[m]:.5g}" if isinstance(r[m], float) else r[m]) for m in METRICS]),
                    (tpath, ["config", "step", "cpu_s", "wall_s"],
                     [cid, r["step"], r["cpu_s"], r["wall_s"]])):
                first = not os.path.exists(path)
                with open(path, "a", newline="") as f:
                    w = csv.writer(f, lineterminator="\n")
                    if first:
                        w.writerow(header)
                    w.writerow(vals)

        run(cfg, on_row=on_row)
        new += 1


if __name__ == "__main__":
    main()
