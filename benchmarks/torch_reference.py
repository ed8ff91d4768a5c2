"""grokjax against the authors' PyTorch Grokfast code, in one process, on this machine.

The reference is Lee et al.'s ``ironjr/grokfast`` ``main.py`` as written: the decoder
(sequence-first, ``nn.MultiheadAttention`` with a causal mask, the residual onto the
normalised input, logits for every position), ``torch.optim.Adam`` (lr 1e-3, betas
(0.9, 0.98), coupled weight decay), the ``LambdaLR`` warm-up ``min(k/10, 1)``, the
``gradfilter_ema`` filter (α 0.98, λ 2, wd 0.005), an epoch-wise shuffle of the
training split cut with ``torch.split`` into batches of 512 and an evaluation of the
whole validation split (in batches of 512) after every epoch. Both sides train on the
same x·y mod 97 table (97 × 96 pairs, 50% train, split seed 0) with their own
initialisation.

It prints, for each side:

1. training steps per second of one member (forward + backward + update, the batch
   already in memory; PyTorch without evaluation, grokjax's trainer program with one
   evaluation per ``--steps`` steps, which counts against it; compile excluded), and
2. with ``--time-to-grok``, the wall time from the start of training (grokjax:
   ``run_experiment`` from the call, compile included) to the first evaluation with
   ≥ 95% validation accuracy, and that step;

and the ratios grokjax / PyTorch. Needs PyTorch (not a grokjax dependency): on the
project's CPU machine ``pip install torch==2.13.0`` takes the CPU wheel on its disk.

    python benchmarks/torch_reference.py [--steps 100] [--threads 2] [--time-to-grok]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np

from grokjax.data import modular_arithmetic

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_throughput import time_program, time_to_grok

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("This benchmark needs PyTorch: pip install torch==2.13.0 (CPU wheel).")

P, BATCH, ALPHA, LAMB, WD = 97, 512, 0.98, 2.0, 0.005


class Block(nn.Module):
    """``ironjr/grokfast`` ``main.py``'s block, verbatim in behaviour."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_mask = torch.full((len(x), len(x)), -float("Inf"), dtype=x.dtype)
        attn_mask = torch.triu(attn_mask, diagonal=1)
        x = self.ln_1(x)
        a, _ = self.attn(x, x, x, attn_mask=attn_mask, need_weights=False)
        x = x + a
        return x + self.mlp(self.ln_2(x))


class Decoder(nn.Module):
    def __init__(self, dim=128, num_layers=2, num_heads=4, num_tokens=P + 2, seq_len=5):
        super().__init__()
        self.token_embeddings = nn.Embedding(num_tokens, dim)
        self.position_embeddings = nn.Embedding(seq_len, dim)
        self.layers = nn.Sequential(*[Block(dim, num_heads) for _ in range(num_layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_tokens, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.token_embeddings(x)
        positions = torch.arange(x.shape[0]).unsqueeze(-1)
        h = h + self.position_embeddings(positions).expand_as(h)
        return self.head(self.ln_f(self.layers(h)))


def gradfilter_ema(model: nn.Module, grads: dict | None) -> dict:
    """The reference's ``gradfilter_ema`` (grokfast.py)."""
    if grads is None:
        grads = {n: p.grad.data.detach() for n, p in model.named_parameters() if p.requires_grad}
    for n, p in model.named_parameters():
        if p.requires_grad:
            grads[n] = grads[n] * ALPHA + p.grad.data.detach() * (1 - ALPHA)
            p.grad.data = p.grad.data + grads[n] * LAMB
    return grads


def torch_data() -> tuple[torch.Tensor, torch.Tensor]:
    """(5, N) columns ``x, op, y, =, answer`` for the train and validation splits."""
    table = modular_arithmetic("x*y", P, 0.5, seed=0, y_min=1)
    seq = np.concatenate([table.tokens(), table.labels_N[:, None]], axis=1).T.astype(np.int64)
    return torch.from_numpy(seq[:, table.train_idx]), torch.from_numpy(seq[:, table.val_idx])


def torch_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = Decoder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=WD, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(k / 10, 1))
    return model, opt, sched


def torch_step(model, opt, sched, batch: torch.Tensor, grads: dict | None):
    logits = model(batch[:-1])
    loss = F.cross_entropy(logits[-1], batch[-1])
    model.zero_grad()
    loss.backward()
    grads = gradfilter_ema(model, grads)
    opt.step()
    sched.step()
    return logits, grads


def torch_steps_per_second(steps: int) -> float:
    model, opt, sched = torch_setup()
    train, _ = torch_data()
    batches = [train[:, torch.randperm(train.shape[1])[:BATCH]] for _ in range(steps + 5)]
    grads = None
    for b in batches[:5]:  # warm-up
        _, grads = torch_step(model, opt, sched, b, grads)
    start = time.perf_counter()
    for b in batches[5:]:
        _, grads = torch_step(model, opt, sched, b, grads)
    return steps / (time.perf_counter() - start)


def torch_time_to_grok(max_steps: int, seed: int = 0) -> tuple[float, int | None]:
    start = time.perf_counter()
    model, opt, sched = torch_setup(seed)
    train, val = torch_data()
    grads, step = None, 0
    for _ in range(math.ceil(max_steps / math.ceil(train.shape[1] / BATCH))):
        train = train[:, torch.randperm(train.shape[1])]
        model.train()
        for batch in torch.split(train, BATCH, dim=1):
            _, grads = torch_step(model, opt, sched, batch, grads)
            step += 1
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(b[:-1])[-1].argmax(-1) == b[-1]).sum())
                for b in torch.split(val, BATCH, dim=1)
            )
        if correct / val.shape[1] >= 0.95:
            return time.perf_counter() - start, step
    return time.perf_counter() - start, None


def grokjax_steps_per_second(steps: int) -> float:
    """The trainer's compiled program, one EMA member, one evaluation per ``steps`` steps."""
    seconds, _ = time_program(1, eval_every=steps, calls=3)
    return 1.0 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-to-grok", action="store_true")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="torch.manual_seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")

    ref = torch_steps_per_second(args.steps)
    ours = grokjax_steps_per_second(args.steps)
    print(f"steps/s, one member, no evaluation: PyTorch {ref:.1f}, grokjax {ours:.1f}")
    print(f"ratio grokjax / PyTorch: {ours / ref:.2f}x")
    if args.time_to_grok:
        for seed in args.seeds:
            ref_s, ref_step = torch_time_to_grok(args.max_steps, seed)
            print(f"PyTorch EMA recipe, seed {seed}: 95% val at step {ref_step}, {ref_s:.1f} s")
        our_s, our_step = time_to_grok(args.max_steps)
        print(f"grokjax EMA recipe: 95% val at step {our_step} after {our_s:.1f} s")
        ratio = ref_s / our_s
        print(f"wall time to 95%, PyTorch seed {args.seeds[-1]} / grokjax: {ratio:.2f}x")


if __name__ == "__main__":
    main()
