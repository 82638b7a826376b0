#!/usr/bin/env python3
"""sinkrep's from-scratch decoder and its attention variants in plain PyTorch, trained
under torchrun DDP (NCCL on GPUs, gloo on CPU): the documented path for runs past one
machine. Not a project dependency.

    torchrun --nproc_per_node 2 scripts/peers/train_ddp.py --variant headwise --seed 0 \
        --scale smoke --out runs/ddp

writes, per variant and seed, the layout `sinkrep train` writes:

    OUT/<variant>/seed-<N>/train_log.csv     step,tokens,train_loss,lr,grad_norm
    OUT/<variant>/seed-<N>/val_log.csv       step,tokens,val_loss
    OUT/<variant>/seed-<N>/checkpoints/step-NNNNNNN/   HF folders (config.json,
        model.safetensors, tokenizer.json, tokenizer_config.json)
    OUT/<variant>/seed-<N>/hf/               the final weights, an HF folder

so `sinkrep analyze --model OUT/<variant>/seed-<N>` reads the result. The architecture is
crates/sinkrep-model's (RMSNorm, half-split RoPE, SwiGLU, tied embeddings; head-wise
RMSNorm or a sigmoid gate on the value aggregation), the optimisation crates/sinkrep-train's
(AdamW without decay on gains, warm-up + cosine, clipping at 1.0), the data the pinned
corpus as bytes with the same document split. Batches are drawn with torch's generator,
not sinkrep's SplitMix64 sampler, so losses agree with `sinkrep train` statistically,
not bit for bit. Each rank trains on its share of the global batch.
"""
import argparse
import csv
import ctypes
import json
import math
import os
import sys
import tomllib

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = {
    "baseline": {"kind": "baseline"},
    "headwise": {"kind": "headwise-rmsnorm", "shared": True},
    "headwise-perhead": {"kind": "headwise-rmsnorm", "shared": False},
    "gated": {"kind": "gated"},
}
VAL_EVERY = 10  # crates/sinkrep-train: document i is validation when i % 10 == 0


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Block(nn.Module):
    def __init__(self, a, variant):
        super().__init__()
        d, h, dh, f = a.d_model, a.n_heads, a.d_model // a.n_heads, a.d_ff
        self.h, self.dh, self.eps, self.variant = h, dh, 1e-5, variant
        self.input_layernorm = nn.Parameter(torch.ones(d))
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, h * dh, bias=False) for _ in range(3))
        self.o_proj = nn.Linear(h * dh, d, bias=False)
        if variant["kind"] == "headwise-rmsnorm":
            self.head_norm = nn.Parameter(torch.ones(dh) if variant["shared"] else torch.ones(h, dh))
        if variant["kind"] == "gated":
            self.attn_gate = nn.Linear(d, h * dh, bias=False)
        self.post_attention_layernorm = nn.Parameter(torch.ones(d))
        self.gate_proj, self.up_proj = (nn.Linear(d, f, bias=False) for _ in range(2))
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        xn = rms_norm(x, self.input_layernorm, self.eps)
        q, k, v = (p(xn).view(b, t, self.h, self.dh).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rope(q, cos, sin), rope(k, cos, sin)  # (B, H, T, Dh)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # (B, T, H, Dh)
        if self.variant["kind"] == "headwise-rmsnorm":
            z = rms_norm(z, self.head_norm, self.eps)
        elif self.variant["kind"] == "gated":
            z = z * torch.sigmoid(self.attn_gate(xn)).view(b, t, self.h, self.dh)
        x = x + self.o_proj(z.reshape(b, t, -1))
        xn = rms_norm(x, self.post_attention_layernorm, self.eps)
        return x + self.down_proj(F.silu(self.gate_proj(xn)) * self.up_proj(xn))


def rope(x, cos, sin):
    """HF's rotate_half convention (pairs i, i + Dh/2), sinkrep's RopePairing::HalfSplit."""
    half = x.shape[-1] // 2
    x0, x1 = x[..., :half], x[..., half:]
    return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1)


class Decoder(nn.Module):
    def __init__(self, a, variant):
        super().__init__()
        self.a = a
        self.embed_tokens = nn.Embedding(256, a.d_model)
        self.layers = nn.ModuleList(Block(a, variant) for _ in range(a.n_layers))
        self.norm = nn.Parameter(torch.ones(a.d_model))
        dh = a.d_model // a.n_heads
        inv = 1.0 / (10_000.0 ** (torch.arange(0, dh // 2, dtype=torch.float64) * 2 / dh))
        freqs = torch.arange(a.seq_len, dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("cos", freqs.cos().float(), persistent=False)
        self.register_buffer("sin", freqs.sin().float(), persistent=False)
        # sinkrep's init: N(0, min(0.02, 1/sqrt(fan_in))) for linear layers, N(0, 0.02) for
        # the embedding, ones for gains.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, min(0.02, 1 / math.sqrt(m.in_features)))
        nn.init.normal_(self.embed_tokens.weight, 0.0, 0.02)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, self.cos[:t], self.sin[:t])
        return F.linear(rms_norm(x, self.norm, 1e-5), self.embed_tokens.weight)  # tied


def hf_state(model, variant):
    """The HF tensor names of sinkrep-model's hf::WEIGHT_NAMES."""
    out = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm}
    for i, l in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = l.input_layernorm
        out[p + "post_attention_layernorm.weight"] = l.post_attention_layernorm
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{n}.weight"] = getattr(l, n).weight
        for n in ("gate_proj", "up_proj", "down_proj"):
            out[p + f"mlp.{n}.weight"] = getattr(l, n).weight
        if variant["kind"] == "headwise-rmsnorm":
            out[p + "self_attn.head_norm.weight"] = l.head_norm
        if variant["kind"] == "gated":
            out[p + "self_attn.attn_gate.weight"] = l.attn_gate.weight
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def byte_tokenizer_json():
    """tokenizer.json of the byte vocabulary (id = byte), GPT-2 byte-level pieces."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": bl, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {chars[b]: b for b in range(256)}, "merges": []},
    }


def save_safetensors(tensors, path):
    """The safetensors format written directly (8-byte little-endian header length, JSON
    header, raw little-endian data), so this script needs nothing but torch."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name]  # contiguous f32 on the CPU; x86 and ARM are little-endian
        b = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for b in blobs:
            f.write(b)


def save_hf(model, a, variant, path):
    tmp = path + f".tmp-{os.getpid()}"
    os.makedirs(tmp)
    save_safetensors(hf_state(model, variant), os.path.join(tmp, "model.safetensors"))
    baseline = variant["kind"] == "baseline"
    cfg = {
        "architectures": ["LlamaForCausalLM" if baseline else "SinkrepLlamaForCausalLM"],
        "model_type": "llama" if baseline else "sinkrep_llama",
        "vocab_size": 256, "hidden_size": a.d_model, "intermediate_size": a.d_ff,
        "num_hidden_layers": a.n_layers, "num_attention_heads": a.n_heads,
        "num_key_value_heads": a.n_heads, "head_dim": a.d_model // a.n_heads, "hidden_act": "silu",
        "max_position_embeddings": a.seq_len, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
        "bos_token_id": None, "eos_token_id": None, "torch_dtype": "float32",
        "sinkrep": {"rope_pairing": "half-split", "attn_variant": variant},
    }
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(tmp, "tokenizer.json"), "w") as f:
        json.dump(byte_tokenizer_json(), f)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False,
                   "model_max_length": a.seq_len}, f)
    os.rename(tmp, path)


def corpus(a):
    if a.corpus:
        d = a.corpus
    else:
        cache = os.environ.get("SINKREP_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sinkrep")
        d = os.path.join(cache, "inputs", "shakespeare")
    names = sorted(n for n in os.listdir(d) if n.endswith(".txt"))
    docs = [open(os.path.join(d, n), "rb").read().replace(b"\r\n", b"\n") for n in names]
    val = [x for i, x in enumerate(docs) if i % VAL_EVERY == 0]
    train = [x for i, x in enumerate(docs) if i % VAL_EVERY != 0]
    as_t = lambda ds: [torch.frombuffer(bytearray(x), dtype=torch.uint8).long() for x in ds if len(x) > a.seq_len]
    return as_t(train), as_t(val)


def batch(docs, n, t, gen):
    """n windows of t+1 tokens, starts uniform over all valid positions (as sinkrep)."""
    sizes = torch.tensor([len(d) - t for d in docs])
    cum = sizes.cumsum(0)
    r = torch.randint(int(cum[-1]), (n,), generator=gen)
    rows = []
    for x in r.tolist():
        i = int(torch.searchsorted(cum, torch.tensor(x), right=True))
        start = x - (int(cum[i - 1]) if i else 0)
        rows.append(docs[i][start:start + t + 1])
    w = torch.stack(rows)
    return w[:, :-1], w[:, 1:]


def lr_at(a, step):
    if step <= a.warmup:
        return a.lr * step / max(a.warmup, 1)
    p = min((step - a.warmup) / max(a.steps - a.warmup, 1), 1.0)
    return a.min_lr + (a.lr - a.min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=list(VARIANTS), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", choices=["smoke", "cpu", "gpu"], help="claim 4's subject sizes")
    ap.add_argument("--corpus", help="folder of .txt documents (default: the pinned corpus)")
    ap.add_argument("--ckpt-every", type=int, help="default: steps / 4")
    for k, typ in [("d_model", int), ("n_layers", int), ("n_heads", int), ("d_ff", int), ("seq_len", int),
                   ("batch", int), ("steps", int), ("warmup", int), ("lr", float), ("min_lr", float),
                   ("weight_decay", float), ("eval_every", int), ("eval_batches", int)]:
        ap.add_argument("--" + k.replace("_", "-"), type=typ)
    a = ap.parse_args()
    if a.scale:
        with open(os.path.join(REPO, "replications/headwise-rmsnorm/claim.toml"), "rb") as f:
            sub = tomllib.load(f)["scale"][a.scale]["subject"]
        for k, v in sub.items():
            if getattr(a, k, None) is None:
                setattr(a, k, v)
    missing = [k for k in ("d_model", "n_layers", "n_heads", "d_ff", "seq_len", "batch", "steps", "warmup",
                           "lr", "min_lr", "weight_decay", "eval_every", "eval_batches") if getattr(a, k) is None]
    if missing:
        sys.exit(f"train_ddp: give --scale or {', '.join('--' + m.replace('_', '-') for m in missing)}")
    a.ckpt_every = a.ckpt_every or max(math.ceil(a.steps / 4), 1)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if a.batch % world:
        sys.exit(f"train_ddp: --batch {a.batch} is not a multiple of {world} processes")
    run = os.path.join(a.out, a.variant, f"seed-{a.seed}")
    if rank == 0:
        if os.path.exists(run) and os.listdir(run):
            sys.exit(f"train_ddp: {run} is not empty; refusing to overwrite a run")
        os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
    dist.barrier()

    variant = VARIANTS[a.variant]
    torch.manual_seed(a.seed)  # same initial weights on every rank
    model = Decoder(a, variant).to(device)
    ddp = nn.parallel.DistributedDataParallel(model)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    other = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    train, val = corpus(a)
    gen = torch.Generator().manual_seed(a.seed * 1000 + rank)
    val_gen = torch.Generator().manual_seed(12345)
    val_batches = [batch(val, a.batch, a.seq_len, val_gen) for _ in range(a.eval_batches)]
    per_rank, tokens_per_step = a.batch // world, a.batch * a.seq_len

    def val_loss():
        model.eval()
        with torch.no_grad():
            s = sum(F.cross_entropy(model(x.to(device)).flatten(0, 1), y.to(device).flatten()).item()
                    for x, y in val_batches)
        model.train()
        return s / len(val_batches)

    tlog = vlog = None
    if rank == 0:
        tlog = open(os.path.join(run, "train_log.csv"), "w", newline="")
        vlog = open(os.path.join(run, "val_log.csv"), "w", newline="")
        tw, vw = csv.writer(tlog), csv.writer(vlog)
        tw.writerow(["step", "tokens", "train_loss", "lr", "grad_norm"])
        vw.writerow(["step", "tokens", "val_loss"])
        vw.writerow([0, 0, val_loss()])
    for step in range(1, a.steps + 1):
        lr = lr_at(a, step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(train, per_rank, a.seq_len, gen)
        loss = F.cross_entropy(ddp(x.to(device)).flatten(0, 1), y.to(device).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over ranks
        gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        if rank == 0:
            tw.writerow([step, step * tokens_per_step, float(mean_loss) / world, lr, gn])
            if step == a.steps or step % a.eval_every == 0:
                vw.writerow([step, step * tokens_per_step, val_loss()])
            if step == a.steps or step % a.ckpt_every == 0:
                save_hf(model, a, variant, os.path.join(run, "checkpoints", f"step-{step:07d}"))
            if step == a.steps:
                save_hf(model, a, variant, os.path.join(run, "hf"))
    if rank == 0:
        tlog.close()
        vlog.close()
        print(f"train_ddp: {run}: {a.steps} steps on {world} process(es)", file=sys.stderr)
    # Finish together (rank 0 may still be writing checkpoints), then leave without the
    # C++ teardown: gloo's threads made a rank abort at exit ("terminate called without an
    # active exception") on a loaded 2-core machine, once before this barrier existed and
    # once after it, with destroy_process_group. Every file is written and closed here;
    # the OS closes the sockets.
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
