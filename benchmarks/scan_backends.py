"""Time the selective-scan backends on this machine: forward and forward+backward.

Compares, in one process and on the same inputs (``gate="none"``, softplus on ``delta``,
``A`` in float32, the other inputs in ``--dtype``), any of ``--backends``:

- ``reference``: ``lax.scan`` with its written-out backward scan;
- ``autodiff``: the same forward scan differentiated by JAX itself (what ``reference``
  was before it had a custom VJP);
- ``associative``: ``lax.associative_scan``;
- ``triton``: ``selective_scan(backend="triton")``, the Triton kernels with the default
  forward; ``triton-sequential`` and ``triton-parallel``: each forward kernel through
  :func:`grokjax.ops.triton_scan.triton_selective_scan`. These need a CUDA GPU with
  jax-triton (``--interpret`` runs them in Triton's CPU interpreter instead: a dry run
  of their code paths, not a timing) and are left out under ``--members``, since
  jax-triton's ``triton_call`` has no ``vmap`` rule.

It prints ms per call (the best of ``--rounds`` rounds of ``--repeats`` calls issued back
to back), the ratio to ``reference`` and the ratio to the larger of two floors:

- memory: the bytes a call must move ÷ ``--hbm-tbps``. The forward reads ``u, delta, B, C,
  A`` and writes ``y``; the backward reads them and ``dy`` again and writes ``du, ddelta,
  dB, dC, dA``.
- exp: the exponentials a call must evaluate ÷ ``--exp-per-s``: ``exp(dt·A)`` at every
  ``(b, t, d, n)`` and the softplus's at every ``(b, t, d)`` in the forward, and as many
  again in the backward (recomputing the decays moves less than storing them would).
  Logarithms and reciprocals are not counted, so this is a lower bound.

The defaults are an H200's: 4.8 TB/s nominal HBM bandwidth, and 132 SMs × 16 ``ex2`` per
clock × 1.98 GHz (Triton's ``exp`` is one ``ex2`` after a multiply).

``--members M`` runs every candidate under ``jax.vmap`` over M members with their own
inputs, as the trainer runs seeds. ``--sweep`` times the Triton forward over its launch
options instead (block_d, num_warps, tile, chunk, num_stages; a greedy search from each
variant's defaults), for at most ``--budget-s`` seconds.

Usage: ``python benchmarks/scan_backends.py [--shape B L D N] [--dtype float32 bfloat16]
[--backends reference triton-parallel ...] [--repeats 10] [--members M] [--sweep]``.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import math
import os
import sys
import time

import jax
import jax.numpy as jnp

from grokjax.ops import selective_scan, triton_scan
from grokjax.ops.selective_scan import _discretise, _scan_states

BACKENDS = (
    "reference",
    "autodiff",
    "associative",
    "triton",
    "triton-sequential",
    "triton-parallel",
)
TRITON = ("triton", "triton-sequential", "triton-parallel")
COMMON = dict(gate="none", delta_softplus=True)


def autodiff_reference(u, delta, A, B, C):
    """The reference forward scan, differentiated by JAX (no custom VJP)."""
    dt, A32, dtu, B32 = _discretise(u, delta, A, B, None, True)
    return _scan_states(dt, A32, dtu, B32, C)[0].astype(u.dtype)


def triton_forward(**options):
    """The Triton scan's ``y`` with launch options (``variant``, ``block_d``, ...)."""

    def fn(u, delta, A, B, C):
        return triton_scan.triton_selective_scan(u, delta, A, B, C, **COMMON, **options)[0]

    return fn


def candidate(name: str):
    if name == "autodiff":
        return autodiff_reference
    if name.startswith("triton-"):
        return triton_forward(variant=name.removeprefix("triton-"))
    return lambda *a: selective_scan(*a, **COMMON, backend=name)


def timed(fn, args, repeats: int, rounds: int) -> float:
    """ms per call: the best round of ``repeats`` calls issued back to back, as a
    training loop issues them (waiting on each call would add its dispatch latency)."""
    jax.block_until_ready(fn(*args))  # compile and warm up
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1e3


def floors(shape, dtype, hbm_tbps: float, exp_per_s: float) -> dict[str, dict[str, float]]:
    """Per mode ("forward", "forward+backward"): bytes, exps and the two floors in ms."""
    b, length, d, n = shape
    size = jnp.dtype(dtype).itemsize
    bld, bln, dn = b * length * d, b * length * n, d * n
    fwd_bytes = size * (3 * bld + 2 * bln) + 4 * dn  # u, delta, y; B, C; A
    bwd_bytes = size * (5 * bld + 4 * bln) + 8 * dn  # u, delta, dy, du, ddelta; B, C, dB, dC
    fwd_exps = bld * (n + 1)
    out = {}
    for mode, nbytes, exps in (
        ("forward", fwd_bytes, fwd_exps),
        ("forward+backward", fwd_bytes + bwd_bytes, 2 * fwd_exps),
    ):
        memory, exp = nbytes / hbm_tbps / 1e9, exps / exp_per_s * 1e3
        out[mode] = dict(bytes=nbytes, exps=exps, memory=memory, exp=exp, ms=max(memory, exp))
    return out


def make_inputs(shape, dtype, members: int):
    b, length, d, n = shape
    m = (members,) if members else ()
    keys = jax.random.split(jax.random.key(0), 5)
    return (
        jax.random.normal(keys[0], (*m, b, length, d)).astype(dtype),
        jax.random.normal(keys[1], (*m, b, length, d)).astype(dtype),
        -jnp.exp(jax.random.normal(keys[2], (*m, d, n))),
        jax.random.normal(keys[3], (*m, b, length, n)).astype(dtype),
        jax.random.normal(keys[4], (*m, b, length, n)).astype(dtype),
    )


def describe_floors(floor, hbm_tbps: float, exp_per_s: float) -> str:
    return "\n".join(
        f"  {mode}: {f['bytes'] / 1e6:.4g} MB at {hbm_tbps:g} TB/s ≥ {f['memory']:.4g} ms; "
        f"{f['exps'] / 1e6:.4g} M exps at {exp_per_s:.3g}/s ≥ {f['exp']:.4g} ms"
        for mode, f in floor.items()
    )


def run_backends(args, dtype) -> bool:
    """Time the candidates at one dtype; False if any failed."""
    inputs = make_inputs(args.shape, dtype, args.members)
    floor = floors(args.shape, dtype, args.hbm_tbps, args.exp_per_s)
    names = ["reference", *[n for n in args.backends if n != "reference"]]
    members = f", vmap over {args.members} members" if args.members else ""
    print(f"\n(B, L, D, N) = {tuple(args.shape)}, {jnp.dtype(dtype).name}{members}, {args.device}")
    print(f"floors{' per member' * bool(args.members)}:")
    print(describe_floors(floor, args.hbm_tbps, args.exp_per_s))
    print(f"ms per call, best of {args.rounds} rounds of {args.repeats} calls")
    print(f"{'':20s} {'forward':>10s} {'/ref':>6s} {'/floor':>7s} {'fwd+bwd':>10s} {'/ref':>6s} "
          f"{'/floor':>7s}")  # fmt: skip
    ok, results = True, {}
    for name in names:
        if name in TRITON and not args.triton:
            print(f"{name:20s} skipped: needs a CUDA GPU with jax-triton (or --interpret)")
            continue
        if name in TRITON and args.members:
            print(f"{name:20s} skipped: jax-triton's triton_call has no vmap rule")
            continue
        fn = candidate(name)
        if args.members:
            fn = jax.vmap(fn)
        forward = jax.jit(fn)
        loss = lambda *a, fn=fn: jnp.sum(fn(*a).astype(jnp.float32) ** 2)  # noqa: E731
        both = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
        results[name] = []
        for mode, f in (("forward", forward), ("forward+backward", both)):
            try:
                results[name].append(timed(f, inputs, args.repeats, args.rounds))
            except Exception as err:  # a failed candidate must not hide the others' times
                ok = False
                results[name].append(math.nan)
                print(f"{name:20s} {mode} failed: {type(err).__name__}: "
                      f"{str(err).splitlines()[0][:300]}")  # fmt: skip
        cells = []
        for mode, ms in zip(floor, results[name], strict=True):
            ref = results.get("reference", [math.nan, math.nan])[mode != "forward"]
            per_member = ms / max(args.members, 1)
            cells.append(f"{ms:10.4g} {ms / ref:6.3g} {per_member / floor[mode]['ms']:7.3g}")
        print(f"{name:20s} {' '.join(cells)}", flush=True)
    return ok


SEQUENTIAL = dict(variant="sequential", block_d=32, chunk=64, num_warps=4, num_stages=None)
PARALLEL = dict(variant="parallel", block_d=32, chunk=64, tile=16, num_warps=4, num_stages=None)


def sweep_stages(variant: str) -> list[list[dict]]:
    """Option changes for one variant, stage by stage: each stage varies the best so far."""
    if variant == "sequential":
        # More, smaller programs: each walks the whole sequence, so the grid (B·D/block_d
        # programs) is the only parallelism; block_d·N state elements share the warps.
        first = [
            dict(block_d=bd, num_warps=w)
            for bd, w in [(32, 4), (16, 2), (16, 4), (8, 1), (8, 2), (32, 2), (32, 8), (64, 4),
                          (64, 8), (16, 1), (32, 1)]
        ]  # fmt: skip
        warps = []
    else:  # tile × block_d × N float32 tensors in registers: more warps for bigger tiles
        first = [
            dict(block_d=bd, tile=t, num_warps=4 if bd * t <= 512 else 8)
            for bd in (32, 16, 8)
            for t in (16, 8, 32)
        ]
        warps = [[dict(num_warps=w) for w in (2, 4, 8)]]
    return [
        first,
        *warps,
        [dict(chunk=c) for c in (64, 128, 256)],  # fewer checkpoints to write
        [dict(num_stages=s) for s in (None, 1, 2, 4)],  # None: jax-triton's default
    ]


def label(options: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def run_sweep(args, dtype) -> bool:
    """Time the Triton forward over launch options, stage by stage for both variants in
    turn, so a spent budget leaves each variant's most important stages done."""
    inputs = make_inputs(args.shape, dtype, 0)
    floor = floors(args.shape, dtype, args.hbm_tbps, args.exp_per_s)["forward"]["ms"]
    keywords = set(inspect.signature(triton_scan.triton_selective_scan).parameters)
    print(f"\nsweep of the Triton forward: (B, L, D, N) = {tuple(args.shape)}, "
          f"{jnp.dtype(dtype).name}, {args.device}; floor {floor:.4g} ms")  # fmt: skip
    reference = timed(jax.jit(candidate("reference")), inputs, args.repeats, args.rounds)
    print(f"reference forward: {reference:.4g} ms", flush=True)
    deadline = time.monotonic() + args.budget_s if args.budget_s else math.inf
    variants = {}
    for defaults in (SEQUENTIAL, PARALLEL):
        if set(defaults) <= keywords:
            variants[defaults["variant"]] = defaults
        else:
            missing = sorted(set(defaults) - keywords)
            print(f"{defaults['variant']}: skipped, triton_selective_scan lacks {missing}")
    stages = {v: sweep_stages(v) for v in variants}
    best = {v: (math.inf, dict(d)) for v, d in variants.items()}
    default_ms, seen, ok = {}, set(), True
    for i in range(max((len(s) for s in stages.values()), default=0)):
        base = {v: dict(best[v][1]) for v in variants}
        # the variants' changes in turn, so that a budget spent mid-stage leaves both swept
        queue = [[(v, c) for c in stages[v][i]] for v in variants if i < len(stages[v])]
        for variant, change in (x for row in itertools.zip_longest(*queue) for x in row if x):
            options = base[variant] | change
            key = tuple(sorted(options.items(), key=str))
            if key in seen or options["chunk"] % options.get("tile", 1):
                continue
            seen.add(key)
            if time.monotonic() > deadline:
                print(f"stopped: the {args.budget_s:g} s budget is spent")
                report_best(best, reference)
                return ok
            try:
                fn = jax.jit(triton_forward(**options))
                ms = timed(fn, inputs, args.repeats, args.rounds)
            except Exception as err:  # e.g. a config that does not compile: go on
                ok = False
                print(f"{label(options)}: failed: {type(err).__name__}: "
                      f"{str(err).splitlines()[0][:300]}")  # fmt: skip
                continue
            if options == variants[variant]:
                default_ms[variant] = ms
            versus = f"{ms / default_ms[variant]:.2f}x default, " if variant in default_ms else ""
            versus += f"{ms / reference:.3g}x reference, {ms / floor:.3g}x floor"
            print(f"{label(options)}: {ms:.4g} ms ({versus})", flush=True)
            if ms < best[variant][0]:
                best[variant] = (ms, options)
    report_best(best, reference)
    return ok


def report_best(best, reference) -> None:
    for variant, (ms, options) in best.items():
        if ms < math.inf:
            print(
                f"best {variant}: {label(options)}: {ms:.4g} ms ({ms / reference:.3g}x reference)"
            )


def interpreter_launch(*args, kernel, out_shape, grid, zeroed_outputs=(), **meta):
    """jax-triton's ``triton_call`` contract, run in Triton's interpreter on the host
    (torch tensors, through ``jax.pure_callback``)."""
    import ml_dtypes
    import numpy as np
    import torch

    def to_torch(x):
        x = np.array(x)  # writable: torch warns on read-only buffers
        if x.dtype == ml_dtypes.bfloat16:  # numpy has no bfloat16 torch understands
            return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(x)

    def to_numpy(t):
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()

    def host(*values):
        values = iter(values)
        call = [a if isinstance(a, int) else to_torch(next(values)) for a in args]
        dtypes = [getattr(torch, jnp.dtype(s.dtype).name) for s in out_shape]
        outs = [torch.zeros(s.shape, dtype=dt) for s, dt in zip(out_shape, dtypes, strict=True)]
        kernel[grid](*call, *outs, **meta)
        return tuple(to_numpy(o) for o in outs)

    arrays = [a for a in args if not isinstance(a, int)]
    return list(jax.pure_callback(host, tuple(out_shape), *arrays))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 128, 128, 16])
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=["reference", "autodiff", "associative"]
    )
    parser.add_argument("--repeats", type=int, default=10, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (the best counts)")
    parser.add_argument("--members", type=int, default=0, help="vmap over M members (0: none)")
    parser.add_argument("--hbm-tbps", type=float, default=4.8, help="HBM bandwidth, TB/s")
    parser.add_argument("--exp-per-s", type=float, default=132 * 16 * 1.98e9, help="exp rate")
    parser.add_argument("--sweep", action="store_true", help="sweep the Triton forward's options")
    parser.add_argument("--budget-s", type=float, default=0, help="sweep time limit (0: none)")
    parser.add_argument("--interpret", action="store_true", help="Triton on the CPU (dry run)")
    args = parser.parse_args()
    if args.interpret:
        # Before any kernel is defined: the interpreter replaces @triton.jit at definition.
        os.environ["TRITON_INTERPRET"] = "1"
        triton_scan.launch = interpreter_launch
        triton_scan.available = lambda: True
    args.triton = triton_scan.available()
    device = jax.devices()[0]
    args.device = f"{device.platform} ({device.device_kind})"
    args.device += ", Triton in its CPU interpreter" * args.interpret
    print(f"jax {jax.__version__}, {args.device}; {' '.join(sys.argv[1:])}")
    ok = True
    for dtype in args.dtype:
        if args.sweep:
            if not args.triton:
                print("--sweep: skipped, needs a CUDA GPU with jax-triton (or --interpret)")
                continue
            ok = run_sweep(args, dtype) and ok
        else:
            ok = run_backends(args, dtype) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
