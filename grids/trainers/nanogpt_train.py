"""A team's own training script, nanoGPT-style, written for mupcheck's tests of the [trainer] path (issue 43).

    python nanogpt_train.py --n_embd 64 --lr 0.004 --max_tokens 32768 --seed 0 --out runs/x

Argparse flags, its own model (one GPT block), muP from `mup` (set_base_shapes, MuReadout, MuAdamW), its own
loop and its own schedule (linear warmup, then cosine), synthetic data from a fixed Markov chain, human progress
lines among the JSON metric lines mupcheck reads. `--bug group_lr` is the trainer-level muP bug nanoGPT's loop
has: the schedule writes `group["lr"] = lr` into every parameter group and so erases the per-group width scaling
MuAdamW set up. The other flags make it misbehave on purpose: `--fail_width` exits 1 at that width, `--hang`
never finishes, `--silent` prints no metric, `--metrics_file` writes the metrics to {out}/metrics.jsonl.
`--watch` calls mupcheck's coordinate check on the model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from mup import MuAdamW, MuReadout, set_base_shapes
from torch import nn

VOCAB = 64
VALIDATION = 128  # held-out sequences: the validation loss is read on the same ones in every run


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.fc = nn.Linear(width, 4 * width, bias=False)
        self.out = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        # muP: attention logits scaled by 1/d, not 1/sqrt(d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / (c // self.heads))
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, width: int, seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Embedding(seq_len, width)
        self.block = Block(width, heads=max(1, width // 16))
        self.ln = nn.LayerNorm(width)
        self.head = MuReadout(width, VOCAB, readout_zero_init=True)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.block(x)))  # (B, T, V)


def build(width: int, seq_len: int) -> GPT:
    model = GPT(width, seq_len)
    set_base_shapes(model, GPT(16, seq_len), delta=GPT(32, seq_len))
    for name, p in model.named_parameters():  # re-initialise after set_base_shapes, as mup's examples do
        if p.dim() == 2 and "head" not in name and "tok" not in name and "pos" not in name:
            nn.init.normal_(p, std=p.shape[1] ** -0.5)  # 1/sqrt(fan_in): muP's hidden weights
    return model


def data(seed: int, steps: int, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed Markov chain over VOCAB tokens (the same for every run); the seed picks the batches."""
    g = torch.Generator().manual_seed(1234)
    table = torch.softmax(3.0 * torch.randn(VOCAB, VOCAB, generator=g), dim=1)
    rng = torch.Generator().manual_seed(seed)
    n = steps * batch + VALIDATION
    seqs = torch.empty(n, seq_len + 1, dtype=torch.long)
    seqs[:, 0] = torch.randint(VOCAB, (n,), generator=rng)
    for t in range(seq_len):
        seqs[:, t + 1] = torch.multinomial(table[seqs[:, t]], 1, generator=rng).squeeze(1)
    return seqs[:-VALIDATION], seqs[-VALIDATION:]  # training sequences, validation sequences


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n_embd", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--max_tokens", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=16)
    p.add_argument("--bug", choices=["none", "group_lr"], default="none")
    p.add_argument("--fail_width", type=int, default=0)
    p.add_argument("--hang", action="store_true")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--metrics_file", action="store_true")
    p.add_argument("--watch", action="store_true")
    a = p.parse_args(argv)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"train.py: n_embd={a.n_embd} lr={a.lr:g} tokens={a.max_tokens} seed={a.seed} cuda_visible={gpu}", flush=True)
    if a.n_embd == a.fail_width:
        print(f"RuntimeError: CUDA out of memory at n_embd={a.n_embd} (a failure on purpose)", file=sys.stderr)
        return 1
    if a.hang:
        if a.out:
            Path(a.out, "pid").write_text(str(os.getpid()))  # for the test that stops it
        time.sleep(3600)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    steps = a.max_tokens // (a.batch_size * a.seq_len)
    train, val = data(a.seed, steps, a.batch_size, a.seq_len)
    model = build(a.n_embd, a.seq_len)
    opt = MuAdamW(model.parameters(), lr=a.lr)
    base_lrs = [g["lr"] for g in opt.param_groups]  # MuAdamW's per-group rates: the width scaling
    if a.watch:
        from mupcheck.watch import watch

        watch(model)
    sink = open(Path(a.out) / "metrics.jsonl", "a") if a.metrics_file else sys.stdout  # noqa: SIM115
    warmup, first = max(1, steps // 10), None
    for step in range(steps):
        progress = (step - warmup) / max(1, steps - warmup)
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * progress))
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = (a.lr if a.bug == "group_lr" else base) * scale  # the bug: every group at the base rate
        batch = train[step * a.batch_size:(step + 1) * a.batch_size]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        first = first if first is not None else loss.item()
        if not math.isfinite(loss.item()) or loss.item() > 3 * first:
            print(json.dumps({"step": step, "loss": float("nan")}), file=sink, flush=True)
            print(f"step {step}: diverged", flush=True)
            return 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % max(1, steps // 4) == 0 or step == steps - 1:
            model.eval()
            with torch.no_grad():
                val_loss = F.cross_entropy(model(val[:, :-1]).flatten(0, 1), val[:, 1:].flatten()).item()
            model.train()
            print(f"step {step + 1}/{steps}: train {loss.item():.4f} val {val_loss:.4f}", flush=True)
            if not a.silent:
                print(json.dumps({"step": step + 1, "tokens": (step + 1) * a.batch_size * a.seq_len,
                                  "loss": val_loss, "train_loss": loss.item()}), file=sink, flush=True)
    return 0


def train(run: object) -> None:
    """The same script as a Python trainer (`python = "nanogpt_train:train"`): mupcheck's run object in, the same
    metric lines out."""
    r: object = run
    args = ["--n_embd", str(r.width), "--lr", repr(r.lr), "--max_tokens", str(r.tokens),  # type: ignore[attr-defined]
            "--seed", str(r.seed), "--out", str(r.run_dir)]  # type: ignore[attr-defined]
    if main(args + os.environ.get("TRAIN_FLAGS", "").split()):
        raise SystemExit(1)


if __name__ == "__main__":
    raise SystemExit(main())
