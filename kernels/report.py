"""Registers, spills and shared memory of every registered Triton kernel, without a GPU.

``python -m grokjax.kernels.report`` compiles each kernel of
:data:`grokjax.kernels.aot.KERNELS` for an NVIDIA target (``--arch``, sm_90 by
default) at the launch defaults of :func:`grokjax.ops.triton_scan.triton_selective_scan`
(``BLOCK_D`` 32, ``CHUNK`` 64, ``N`` 16, 4 warps; float32 and bfloat16 activations)
and over a small sweep (``BLOCK_D`` 16/32/64 × 4/8 warps × both dtypes; ``--quick``
compiles the defaults only). It prints one table row per compilation, as each
finishes, flagging register spills, more than 255 registers per thread and more
shared memory than one block may have. Compile times are those of ``triton.compile``
(Triton's on-disk cache is not read), through ``ptxas`` to the cubin.

The exit status is 1 when a default configuration fails to compile or is flagged:
the configuration every launch uses unless told otherwise must fit the target.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from .aot import KERNELS, MAX_REGISTERS, SHARED_LIMIT_BYTES, KernelConfig, compile_kernel
from .aot import resource_usage as read_usage

__all__ = ["Row", "configurations", "flags", "main", "run"]

#: The sweep around the defaults.
SWEEP_BLOCK_D = (16, 32, 64)
SWEEP_NUM_WARPS = (4, 8)
SWEEP_DTYPES = ("float32", "bfloat16")

_COLUMNS = (
    ("kernel", 0, "<"),  # as wide as the longest kernel name
    ("dtype", 8, "<"),
    ("BLOCK_D", 7, ">"),
    ("N", 3, ">"),
    ("CHUNK", 5, ">"),
    ("warps", 5, ">"),
    ("stages", 6, ">"),
    ("regs", 4, ">"),
    ("smem B", 6, ">"),
    ("cubin smem B", 12, ">"),
    ("stack/local B", 13, ">"),
    ("compile s", 9, ">"),
    ("flags", 0, "<"),
)


@dataclasses.dataclass
class Row:
    """One compilation: what was compiled, what it uses (``None`` if it failed), how
    long it took, and whether it is a default configuration."""

    kernel: str
    config: KernelConfig
    default: bool
    usage: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str | None = None


def configurations(quick: bool, num_stages: int) -> Iterator[tuple[KernelConfig, bool]]:
    """``(config, is_default)``: the defaults first, then the rest of the sweep."""
    defaults = [KernelConfig(dtype=d, num_stages=num_stages) for d in SWEEP_DTYPES]
    yield from ((c, True) for c in defaults)
    if quick:
        return
    for dtype in SWEEP_DTYPES:
        for block_d in SWEEP_BLOCK_D:
            for num_warps in SWEEP_NUM_WARPS:
                config = KernelConfig(
                    dtype=dtype, block_d=block_d, num_warps=num_warps, num_stages=num_stages
                )
                if config not in defaults:
                    yield config, False


def flags(row: Row, arch: int) -> list[str]:
    """What is wrong with a compilation, in words (empty when nothing is)."""
    if row.error is not None:
        return ["FAILED"]
    assert row.usage is not None
    out = []
    if row.usage["spills"]:
        out.append("SPILLS")
    if row.usage["registers"] > MAX_REGISTERS:
        out.append(f"REGS>{MAX_REGISTERS}")
    limit = SHARED_LIMIT_BYTES.get(arch)
    if limit is not None and row.usage["shared_bytes"] > limit:
        out.append(f"SMEM>{limit // 1024}KiB")
    return out


def _widths() -> list[int]:
    kernel_width = max(len(name) for name in KERNELS) + 2  # room for the default mark
    return [kernel_width] + [max(width, len(name)) for name, width, _ in _COLUMNS[1:]]


def _format(values: Sequence[str]) -> str:
    aligns = [align for _, _, align in _COLUMNS]
    cells = [f"{v:{a}{w}}" for v, a, w in zip(values, aligns, _widths(), strict=True)]
    return "  ".join(cells).rstrip()


def _cells(row: Row, arch: int) -> list[str]:
    c, u = row.config, row.usage
    if u is None:
        usage = ["-", "-", "-", "-"]
    else:
        usage = [
            str(u["registers"]),
            str(u["shared_bytes"]),
            str(u["static_shared_bytes"]),
            f"{u['stack_bytes']}/{u['local_bytes']}",
        ]
    found = flags(row, arch)
    if row.error is not None:
        found.append(row.error.splitlines()[0][:120])
    return [
        row.kernel + (" *" if row.default else ""),
        c.dtype,
        str(c.block_d),
        str(c.n),
        str(c.chunk),
        str(c.num_warps),
        str(c.num_stages),
        *usage,
        f"{row.seconds:.1f}",
        " ".join(found),
    ]


def compile_row(kernel: str, config: KernelConfig, default: bool, arch: int) -> Row:
    """Compile one configuration (without Triton's cache) and read what it uses."""
    row = Row(kernel, config, default)
    start = time.perf_counter()
    try:
        compiled = compile_kernel(kernel, config, arch, fresh=True)
        row.seconds = compiled.compile_seconds
        row.usage = read_usage(compiled)
    except Exception as err:  # a failed compilation is a row of the table, not a crash
        row.seconds = time.perf_counter() - start
        row.error = f"{type(err).__name__}: {err}"
    return row


def run(
    arch: int = 90, quick: bool = False, num_stages: int = 3, out: TextIO | None = None
) -> list[Row]:
    """Compile every kernel over the configurations, printing the table as it goes."""
    out = sys.stdout if out is None else out
    print(f"Triton kernels compiled for sm_{arch} (* = default configuration)", file=out)
    print(_format([name for name, _, _ in _COLUMNS]), file=out)
    print(_format(["-" * w for w in _widths()]), file=out)
    rows = []
    for config, default in configurations(quick, num_stages):
        for kernel in KERNELS:
            row = compile_row(kernel, config, default, arch)
            rows.append(row)
            print(_format(_cells(row, arch)), file=out, flush=True)
    limit = SHARED_LIMIT_BYTES.get(arch)
    print(
        "smem B: dynamic shared memory a launch requests (limit "
        + (f"{limit} B per block" if limit else f"unknown for sm_{arch}, not checked")
        + "); cubin smem B: static, as cuobjdump reads it from the cubin; stack/local B: "
        "per thread, stack frame (where spills go) / local memory.",
        file=out,
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grokjax.kernels.report",
        description="Compile the Triton kernels for an NVIDIA target without a GPU and print "
        "their registers, spills and shared memory.",
    )
    parser.add_argument(
        "--arch", type=int, default=90, help="compute capability, e.g. 90 for sm_90 (default)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="the default configurations only, no sweep"
    )
    parser.add_argument(
        "--num-stages",
        type=int,
        default=3,
        help="software-pipelining stages (default 3, jax-triton's default)",
    )
    args = parser.parse_args(argv)
    rows = run(arch=args.arch, quick=args.quick, num_stages=args.num_stages)
    bad = [r for r in rows if r.default and flags(r, args.arch)]
    for row in bad:
        print(
            f"default configuration {row.kernel} ({row.config.dtype}): "
            + (row.error or " ".join(flags(row, args.arch))),
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
