"""A scaling model on paper, from parts measured on the real trainer's code.

For (a) the Grokfast sweep (``grokfast_modmul``: baseline, Grokfast-EMA, Grokfast-MA)
and (b) the Mamba LM (``mamba_swelu`` at its config size, and a larger GPU-size variant,
``--large``), it measures per member, with one seed per method (1 member per group):

- parameters (count, bytes), optimizer-state bytes and the whole member state
  (``GroupState``: params + optimizer state + keys + split indices + input noise), which
  is what a checkpoint holds per member: ``init_groups`` runs with its jitted
  initialisation replaced by ``jax.eval_shape`` (shapes only, nothing allocated);
- FLOPs of one training step and of one evaluation: XLA's ``cost_analysis()`` of the
  compiled interval function (``make_interval_fn``, 1 member: ``lax.map`` runs once)
  with its steps unrolled (XLA counts a ``while`` body once, whatever its trip count),
  at k and k+1 steps: ``step = F(k+1) − F(k)``, ``eval = F(k) − k·step``. The Mamba
  selective scan's own ``lax.scan`` over time stays a loop; its ``L − 1`` uncounted
  iterations are added as ``(L − 1)·c·B·E·N·depth`` with ``c`` (FLOPs per state element
  per time step, training and evaluation separately) measured once by compiling a
  tiny Mamba with that scan unrolled (``unroll=True``) and without;
- the working memory of a step: ``memory_analysis().temp_size_in_bytes`` of the same
  compiled 1-member program (XLA on this CPU; an estimate of a GPU's);
- the metrics one evaluation reports per member (bytes, from ``jax.eval_shape``).

Then, per device count n (``--devices``), on paper:

(1) members sharded (``("members", "data")`` mesh with data = 1; M members per method,
    default M = n, padded to a multiple of n): no collective in the step (members are
    independent); per evaluation an all-gather of the metrics,
    ``bytes = M_padded × metric_bytes_per_member`` summed over methods; checkpoint bytes
    ``M × Σ_methods member_state_bytes`` in all, ``/ n`` per device; per-device state
    ``⌈M/n⌉ × Σ_methods (member_state + temp)``; compute per step per device
    ``⌈M/n⌉ × Σ_methods step_flops / (MFU × peak)``.
(2) data-parallel, one member over D = n devices (the LM): the gradients are
    all-reduced every step, ``bytes = param_bytes``; a ring all-reduce moves
    ``2·(D−1)/D × param_bytes`` per device, at NVLink bandwidth within a node
    (D ≤ GPUS_PER_NODE), else at the per-GPU InfiniBand bandwidth; batch per device
    ``B/D`` (D must divide B); compute per device ``step_flops / D / (MFU × peak)``.
    The first bottleneck is the smallest D whose all-reduce time exceeds its compute
    time (no overlap of the two assumed), or whose batch no longer splits.
(3) memory bound of the sweep: members per device
    ``⌊(HBM × usable fraction − shared data) / (member_state + temp)⌋`` per method, and
    for the whole sweep (one member of every method per slot) the member count per
    method ``n × slots_per_device`` above which members no longer fit.

Every hardware constant is named in ``CONSTANTS`` below with its source; every other
number is computed from the code. Nothing is timed.

Usage:
    python benchmarks/scaling_model.py [--devices 1 8 64 512] [--members M]
        [--large model.width=768 model.depth=24 data.seq_len=1024 data.val_windows=32
         batch_size=512] [--no-large]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import math
import types
from collections.abc import Iterator, Sequence
from unittest import mock

import jax
import jax.numpy as jnp

from grokjax.train import apply_overrides, resolve, select_methods
from grokjax.train.state import init_groups
from grokjax.train.step import make_interval_fn, task_data

# the module (grokjax.ops re-exports its function under the same name)
scan_module = importlib.import_module("grokjax.ops.selective_scan")

# ---------------------------------------------------------------------------------------
# Every assumed constant, in one place, with its source.
CONSTANTS = {
    # NVIDIA H100 SXM5 datasheet: 989 TFLOP/s dense BF16 tensor core (1979 with sparsity)
    "peak_bf16_flops": (989e12, "H100 SXM dense BF16 tensor-core peak (NVIDIA datasheet)"),
    # NVIDIA H100 SXM5 datasheet: 67 TFLOP/s FP32 (CUDA cores, no TF32 tensor cores)
    "peak_fp32_flops": (67e12, "H100 SXM FP32 peak (NVIDIA datasheet)"),
    "mfu": (0.40, "assumed sustained fraction of peak (model FLOPs utilisation)"),
    # NVLink 4: 18 links × 25 GB/s per direction = 450 GB/s per direction per GPU
    "nvlink_bytes_s": (450e9, "NVLink 4 per direction per H100, within a node"),
    # NDR InfiniBand 400 Gb/s, one ConnectX-7 NIC per GPU in a DGX/HGX H100
    "ib_bytes_s": (50e9, "InfiniBand NDR 400 Gb/s = 50 GB/s per GPU, across nodes"),
    "gpus_per_node": (8, "GPUs per NVLink domain (DGX/HGX H100)"),
    "hbm_bytes": (80e9, "H100 SXM HBM3 capacity, 80 GB"),
    # JAX preallocates XLA_PYTHON_CLIENT_MEM_FRACTION = 75% of GPU memory by default
    "usable_fraction": (0.75, "JAX's default GPU preallocation (XLA_PYTHON_CLIENT_MEM_FRACTION)"),
}
C = {k: v for k, (v, _) in CONSTANTS.items()}

# One member per compiled program: ``lax.map`` then runs its body once, so XLA's cost
# analysis counts it exactly, the same work as the accelerators' ``vmap`` of 1 member.
# (At commit 2023cb9 the ``vmap`` path raises "_member_step() got multiple values for
# argument 'batch_sharding'": its vmap passes ``batch`` positionally.)
MEMBER_AXIS = "map"

# the GPU-size Mamba variant (the mamba-130m shape: d_model 768, 24 layers) on longer
# sequences and a batch that 512 devices can split (the offline text holds 45 validation
# windows of 1025 bytes: 32 of them)
LARGE = (
    "model.width=768",
    "model.depth=24",
    "data.seq_len=1024",
    "data.val_windows=32",
    "batch_size=512",
)


# ---------------------------------------------------------------------------------------
# Measuring the code


@contextlib.contextmanager
def abstract_init() -> Iterator[None]:
    """Run :func:`init_groups` with its jitted ``init_all`` evaluated by ``jax.eval_shape``:
    the member states come back as ``ShapeDtypeStruct`` leaves, nothing is allocated."""
    real_jit = jax.jit

    def jit(fn=None, **kwargs):
        if fn is not None and getattr(fn, "__name__", "") == "init_all" and not kwargs:
            return lambda *args: jax.eval_shape(fn, *args)
        return real_jit(fn, **kwargs) if fn is not None else real_jit(**kwargs)

    with mock.patch.object(jax, "jit", jit):
        yield


@contextlib.contextmanager
def unrolled_selective_scan() -> Iterator[None]:
    """The selective scan's ``lax.scan`` loops over time unrolled (the same maths, as
    straight-line code that XLA's cost analysis counts in full)."""
    lax = scan_module.lax
    proxy = types.SimpleNamespace(
        **{n: getattr(lax, n) for n in dir(lax) if not n.startswith("__")}
    )
    proxy.scan = functools.partial(lax.scan, unroll=True)
    with mock.patch.object(scan_module, "lax", proxy):
        yield


def one_seed(config):
    """``config`` with one seed per method: one member per group."""
    seeds = [f"methods.{i}.seeds=[{m.seeds[0]}]" for i, m in enumerate(config.methods)]
    return apply_overrides(config, seeds)


def nbytes(tree) -> int:
    return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def compiled(group, state, task, config, steps: int):
    """The compiled 1-member interval function of ``steps`` unrolled training steps."""
    fn = make_interval_fn(
        [group],
        task,
        steps,
        MEMBER_AXIS,
        probes=config.probe_functions(),
        unroll=steps,
    )
    return jax.jit(fn).lower([state], jnp.int32(0), task_data(task)).compile()


def flops(program) -> float:
    cost = program.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def step_and_eval_flops(group, state, task, config) -> tuple[float, float, object]:
    """``(step, eval)`` FLOPs of one member from the interval at k and k+1 steps
    (k chosen so both intervals span as many epochs: the same permutation work)."""
    k = 2
    while task.sampling == "epoch" and task.epochs_spanned(k) != task.epochs_spanned(k + 1):
        k += 1
    program = compiled(group, state, task, config, k)
    fk, fk1 = flops(program), flops(compiled(group, state, task, config, k + 1))
    step = fk1 - fk
    return step, fk - k * step, program


def scan_elements(model, batch: int) -> int:
    """State elements ``B·E·N`` (E = expand·width) per time step, over every layer."""
    return batch * model.expand * model.width * model.d_state * model.depth


def scan_constants() -> tuple[float, float]:
    """FLOPs per selective-scan state element per time step that XLA leaves uncounted
    (the loop body beyond its first iteration): ``(training step, evaluation)``,
    measured on a tiny Mamba compiled with the scan loops unrolled and rolled."""
    tiny = apply_overrides(
        resolve("mamba_swelu"),
        ["model.width=16", "model.depth=1", "data.seq_len=8", "data.val_windows=4", "batch_size=4"],
    )
    tiny = one_seed(tiny)
    with abstract_init():
        task, groups, states = init_groups(tiny)
    group, state = groups[0], states[0]
    rolled = step_and_eval_flops(group, state, task, tiny)
    with unrolled_selective_scan():
        unrolled = step_and_eval_flops(group, state, task, tiny)
    loops = tiny.data.seq_len - 1
    c_step = (unrolled[0] - rolled[0]) / (loops * scan_elements(tiny.model, tiny.batch_size))
    val = int(state.val_idx.shape[1])
    c_eval = (unrolled[1] - rolled[1]) / (loops * scan_elements(tiny.model, val))
    return c_step, c_eval


@dataclasses.dataclass
class Member:
    """What one member of a method costs (measured)."""

    method: str
    params: int
    param_bytes: int
    opt_bytes: int
    state_bytes: int  # the whole GroupState of one member: a checkpoint's share
    step_flops: float
    eval_flops: float
    temp_bytes: int  # XLA's working memory of the 1-member interval program
    metric_bytes: int  # what one evaluation reports for this member


def measure(config, scan_c: tuple[float, float] | None = None) -> tuple[list[Member], dict]:
    """Every method's :class:`Member` (one seed each) and the shared facts."""
    config = one_seed(config)
    with abstract_init():
        task, groups, states = init_groups(config)
    out = []
    for group, state in zip(groups, states, strict=True):
        step, evaluation, program = step_and_eval_flops(group, state, task, config)
        if scan_c is not None:  # the selective scan's loop iterations XLA counted once
            loops = task.window - 1
            step += loops * scan_c[0] * scan_elements(config.model, config.batch_size)
            val = int(state.val_idx.shape[1])
            evaluation += loops * scan_c[1] * scan_elements(config.model, val)
        fn = make_interval_fn([group], task, 1, MEMBER_AXIS, probes=config.probe_functions())
        _, metrics = jax.eval_shape(fn, [state], jnp.int32(0), task_data(task))
        memory = program.memory_analysis()
        out.append(
            Member(
                method=group.method.label,
                params=int(sum(x.size for x in jax.tree.leaves(state.params))),
                param_bytes=nbytes(state.params),
                opt_bytes=nbytes(state.opt_state),
                state_bytes=nbytes(state),
                step_flops=step,
                eval_flops=evaluation,
                temp_bytes=int(memory.temp_size_in_bytes) if memory is not None else 0,
                metric_bytes=nbytes(metrics),
            )
        )
    shared = {
        "data_bytes": nbytes(task_data(task)),
        "batch": config.batch_size,
        "seq_len": task.window,
        "interval": config.eval_interval(task.num_train),
        "dtype": config.dtype,
        "val_rows": int(states[0].val_idx.shape[1]),
    }
    return out, shared


# ---------------------------------------------------------------------------------------
# The paper model


def peak(dtype: str) -> float:
    return C["peak_bf16_flops"] if dtype in ("bfloat16", "float16") else C["peak_fp32_flops"]


def link_bytes_s(devices: int) -> float:
    """The bandwidth a ring over ``devices`` GPUs runs at: its slowest link's."""
    return C["nvlink_bytes_s"] if devices <= C["gpus_per_node"] else C["ib_bytes_s"]


def allreduce_seconds(nbytes_: float, devices: int) -> float:
    """A ring all-reduce: ``2·(D−1)/D × bytes`` through each device's link."""
    if devices == 1:
        return 0.0
    return 2 * (devices - 1) / devices * nbytes_ / link_bytes_s(devices)


def allgather_seconds(nbytes_: float, devices: int) -> float:
    """A ring all-gather of ``bytes`` in all: ``(D−1)/D × bytes`` into each device."""
    return 0.0 if devices == 1 else (devices - 1) / devices * nbytes_ / link_bytes_s(devices)


def fmt_bytes(x: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.0f} B"


def fmt_s(x: float) -> str:
    if x == 0:
        return "0"
    for unit, size in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if x >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x * 1e9:.3g} ns"


def usable_hbm() -> float:
    return C["hbm_bytes"] * C["usable_fraction"]


def member_table(members: Sequence[Member], shared: dict) -> list[str]:
    rows = [
        "| method | params | param bytes | opt-state bytes | member state (checkpoint) "
        "| step GFLOP | eval GFLOP | step temp (XLA CPU) | max members / H100 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in members:
        fit = (usable_hbm() - shared["data_bytes"]) // (m.state_bytes + m.temp_bytes)
        rows.append(
            f"| {m.method} | {m.params:,} | {fmt_bytes(m.param_bytes)} | "
            f"{fmt_bytes(m.opt_bytes)} | {fmt_bytes(m.state_bytes)} | "
            f"{m.step_flops / 1e9:.4g} | {m.eval_flops / 1e9:.4g} | "
            f"{fmt_bytes(m.temp_bytes)} | {int(fit):,} |"
        )
    return rows


def sharded_table(
    members: Sequence[Member], shared: dict, devices: Sequence[int], per_method: int | None
) -> tuple[list[str], list[str]]:
    """Layout (1) and the memory bound (3); returns the table and its bottleneck lines."""
    state = sum(m.state_bytes for m in members)
    working = sum(m.state_bytes + m.temp_bytes for m in members)
    step = sum(m.step_flops for m in members)
    evaluation = sum(m.eval_flops for m in members)
    metric = sum(m.metric_bytes for m in members)
    rate = C["mfu"] * peak(shared["dtype"])
    slots = int((usable_hbm() - shared["data_bytes"]) // working)  # one of each method
    rows = [
        "| devices | members / method | per device | step collectives | metrics all-gather "
        "/ eval | all-gather time | checkpoint total | checkpoint / device | memory / device "
        "| compute / step / device | interval compute / device |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for n in devices:
        m = per_method or n
        padded = math.ceil(m / n) * n
        local = padded // n
        gather = padded * metric
        memory = shared["data_bytes"] + local * working
        compute = local * step / rate
        interval = shared["interval"] * compute + local * evaluation / rate
        rows.append(
            f"| {n} | {m:,} | {local} × {len(members)} | none (members independent) | "
            f"{fmt_bytes(gather)} | {fmt_s(allgather_seconds(gather, n))} | "
            f"{fmt_bytes(m * state)} | {fmt_bytes(m * state / n)} | "
            f"{fmt_bytes(memory)}{'' if memory <= usable_hbm() else ' (exceeds)'} | "
            f"{fmt_s(compute)} | {fmt_s(interval)} |"
        )
        ratios.append(allgather_seconds(gather, n) / interval)
    heaviest = max(members, key=lambda m: m.state_bytes + m.temp_bytes)
    alone = int(
        (usable_hbm() - shared["data_bytes"]) // (heaviest.state_bytes + heaviest.temp_bytes)
    )
    bound = [
        f"memory binds first: {slots:,} members of every method per H100 "
        f"({fmt_bytes(working)} per slot, {heaviest.method} "
        f"{(heaviest.state_bytes + heaviest.temp_bytes) / working:.0%} of it), i.e. more than "
        + ", ".join(f"{n * slots:,} members per method on {n}" for n in devices)
        + f" devices; {heaviest.method} alone: {alone:,} per H100. Communication never binds "
        f"(the metrics all-gather takes at most {max(ratios):.2g}× an interval's compute)"
    ]
    return rows, bound


def data_parallel_table(member: Member, shared: dict, devices: Sequence[int]):
    """Layout (2): one member over D devices; returns the table and its bottleneck line."""
    batch = shared["batch"]
    rows = [
        "| D | batch / device | all-reduce bytes / step | ring bytes / device | link | "
        "all-reduce time | compute fp32 | compute bf16 | memory / device | bound (fp32 / bf16) |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    first = {"fp32": None, "bf16": None}
    for d in devices:
        if batch % d:
            rows.append(f"| {d} | {batch}/{d}: does not split | | | | | | | | batch |")
            for k in first:
                first[k] = first[k] or (d, "the batch no longer splits")
            continue
        ring = allreduce_seconds(member.param_bytes, d)
        moved = 0 if d == 1 else 2 * (d - 1) / d * member.param_bytes
        t = {
            "fp32": member.step_flops / d / (C["mfu"] * C["peak_fp32_flops"]),
            "bf16": member.step_flops / d / (C["mfu"] * C["peak_bf16_flops"]),
        }
        memory = shared["data_bytes"] + member.state_bytes + member.temp_bytes / d
        bound = []
        for k in first:
            comm = ring > t[k]
            bound.append("comm" if comm else "compute")
            if comm and first[k] is None:
                first[k] = (d, f"all-reduce {fmt_s(ring)} > compute {fmt_s(t[k])}")
        link = "—" if d == 1 else ("NVLink" if d <= C["gpus_per_node"] else "IB")
        rows.append(
            f"| {d} | {batch // d} | {fmt_bytes(0 if d == 1 else member.param_bytes)} | "
            f"{fmt_bytes(moved)} | {link} | {fmt_s(ring)} | {fmt_s(t['fp32'])} | "
            f"{fmt_s(t['bf16'])} | {fmt_bytes(memory)}"
            f"{'' if memory <= usable_hbm() else ' (exceeds)'} | {' / '.join(bound)} |"
        )
    lines = []
    for k, v in first.items():
        if v is None:
            lines.append(f"{k}: no bottleneck up to D = {max(devices)} (compute-bound throughout)")
        else:
            lines.append(f"{k}: first at D = {v[0]} ({v[1]})")
    return rows, lines


def assumptions(extra: Sequence[str] = ()) -> list[str]:
    lines = ["Assumptions:"]
    for name, (value, source) in CONSTANTS.items():
        lines.append(f"- {name} = {value:g}: {source}")
    return lines + [f"- {x}" for x in extra]


def report_sweep(name, config, devices, per_method, scan_c=None):
    """The model's assumptions, per-member table and layout (1)/(3) table."""
    members, shared = measure(config, scan_c)
    out = [f"## {name}", ""]
    out += assumptions(
        [
            f"dtype {shared['dtype']} → peak {peak(shared['dtype']) / 1e12:g} TFLOP/s, "
            f"batch {shared['batch']}, evaluation every {shared['interval']} steps on "
            f"{shared['val_rows']} validation rows, shared data on every device "
            f"{fmt_bytes(shared['data_bytes'])}",
            "members per method = devices unless --members; padded to a multiple of the "
            "devices; one member of every method per slot",
            "memory / device = shared data + members × (member state + XLA CPU temp of a "
            "1-member step)",
        ]
    )
    out += ["", "Per member (measured):", "", *member_table(members, shared)]
    rows, bound = sharded_table(members, shared, devices, per_method)
    out += ["", "Layout (1) members sharded, and (3) the memory bound:", "", *rows]
    out += ["", f"First bottleneck ({name}): " + bound[0], ""]
    return out, members, shared


def report_lm(name, config, devices, per_method, scan_c) -> list[str]:
    """:func:`report_sweep` plus layout (2), data-parallel over D devices."""
    out, members, shared = report_sweep(name, config, devices, per_method, scan_c)
    rows, lines = data_parallel_table(members[0], shared, devices)
    out += [
        f"Layout (2) data-parallel: one {members[0].method} member "
        f"({members[0].params:,} params, batch {shared['batch']} × {shared['seq_len']} tokens) "
        f"over D devices; fp32 gradients all-reduced every step; no overlap of all-reduce "
        "and compute assumed:",
        "",
        *rows,
        "",
        f"First bottleneck ({name}, data-parallel): " + "; ".join(lines),
        "",
    ]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8, 64, 512])
    parser.add_argument(
        "--members", type=int, default=None, help="members per method (default: = devices)"
    )
    parser.add_argument("--large", nargs="*", default=list(LARGE), help="overrides of the LM")
    parser.add_argument("--no-large", action="store_true", help="skip the large LM")
    args = parser.parse_args(argv)

    scan_c = scan_constants()
    out = [
        "# Scaling model (paper estimates from measured parts)",
        "",
        f"JAX {jax.__version__} on {jax.default_backend()}; FLOPs from XLA's cost_analysis "
        "of the compiled 1-member interval (steps unrolled; step = F(k+1) − F(k)). Mamba's "
        f"scan loop: + (L−1)·c·B·E·N·depth, c = {scan_c[0]:.3g} (step) / {scan_c[1]:.3g} "
        "(eval) FLOPs per state element, measured with the loop unrolled.",
        "",
    ]
    out += report_sweep("grokfast_modmul", resolve("grokfast_modmul"), args.devices, args.members)[
        0
    ]
    mamba = resolve("mamba_swelu")
    out += report_lm("mamba_swelu (config size)", mamba, args.devices, args.members, scan_c)
    if not args.no_large:
        # one method (its first: silu) keeps the compiles of the large model few
        large = select_methods(apply_overrides(mamba, args.large), [mamba.methods[0].label])
        label = f"mamba_swelu large ({', '.join(args.large)}; method {mamba.methods[0].label})"
        out += report_lm(label, large, args.devices, args.members, scan_c)
    print("\n".join(out))


if __name__ == "__main__":
    main()
