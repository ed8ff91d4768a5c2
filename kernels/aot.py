"""Ahead-of-time compilation of the Triton kernels for an NVIDIA target, without a GPU.

``triton.compile`` needs no device: given a kernel, a signature (the type of every
argument), the constexpr values and a target such as ``GPUTarget("cuda", 90, 32)``, it
runs the whole pipeline (TTIR, TTGIR, LLVM IR, PTX, and ``ptxas`` for the cubin). Its
bundled ``cuobjdump`` then reads what the cubin uses per thread and per block:
registers, stack frame and local memory (where register spills go) and shared memory.
So register pressure, spills and shared-memory limits of a kernel configuration can
be checked on a CPU machine, before a GPU is at hand.

:data:`KERNELS` describes each kernel of :mod:`grokjax.kernels.selective_scan` as
:mod:`grokjax.ops.triton_scan` launches it through jax-triton: which pointer
arguments carry the activations' dtype (the rest are float32), which scalars are
32-bit integers (``L``, ``DIM``), and the constexprs built from a
:class:`KernelConfig`. The compile options and argument attributes follow jax-triton's
``triton_call``: ``num_warps`` 4 and ``num_stages`` 3 unless given, every array
pointer specialised as 16-byte aligned, integer scalars without a divisibility hint.
Adding a kernel is one more :class:`KernelSpec` in :data:`KERNELS`.

:func:`compile_kernel` (or :func:`compile_kernels`, several at once) compiles entries
into :class:`AotKernel` (each stage's text, the cubin, Triton's metadata);
:func:`resource_usage` reads one. ``python -m grokjax.kernels.report`` prints both for
every kernel over a small sweep of block sizes.

A process that imported triton with ``TRITON_INTERPRET=1`` (as the CPU kernel tests
set it) cannot compile: triton's own library functions are interpreter functions
there. Compilations then run in a subprocess without it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from . import selective_scan

__all__ = [
    "DTYPES",
    "KERNELS",
    "MAX_REGISTERS",
    "SHARED_LIMIT_BYTES",
    "AotKernel",
    "KernelConfig",
    "KernelSpec",
    "compile_kernel",
    "compile_kernels",
    "cuobjdump_path",
    "parse_resource_usage",
    "resource_usage",
]

#: Activation dtypes (``u, delta, z, B, C, y``) and their Triton pointer element types.
DTYPES = {"float32": "fp32", "bfloat16": "bf16"}

#: Registers one thread may use on every NVIDIA architecture Triton targets.
MAX_REGISTERS = 255

#: Shared memory one block may request (the opt-in maximum), by compute capability.
SHARED_LIMIT_BYTES = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """One compilation of a kernel: the activations' dtype, block sizes, compile options
    and the static flags of the Mamba path (``D`` skip, ``delta`` bias, softplus, SiLU
    gate). ``constexprs`` overrides or adds kernel-specific constexprs (e.g. a time
    tile ``T``) on top of a :class:`KernelSpec`'s ``extra_constexprs``.
    """

    dtype: str = "float32"
    block_d: int = 32
    n: int = 16
    chunk: int = 64
    num_warps: int = 4
    num_stages: int = 3
    gate: str = "silu"
    has_d: bool = True
    has_bias: bool = True
    softplus: bool = True
    enable_fp_fusion: bool = True
    constexprs: Mapping[str, int] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}.")
        if self.gate not in selective_scan.GATE_IDS:
            raise ValueError(
                f"gate must be one of {sorted(selective_scan.GATE_IDS)}, got {self.gate!r}."
            )
        for name in ("block_d", "n"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, got {value}.")


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """How one ``@triton.jit`` kernel is compiled: the function, the pointer parameters
    that carry the activations' dtype (every other pointer, named ``*_ptr``, is
    float32), the 32-bit integer scalars, and defaults of kernel-specific constexprs
    beyond the shared ``HAS_D, HAS_BIAS, SOFTPLUS, GATE, BLOCK_D, N, CHUNK``."""

    name: str
    fn: Any
    io_args: frozenset[str]
    scalars: tuple[str, ...] = ("L", "DIM")
    extra_constexprs: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def constexprs(self, config: KernelConfig) -> dict[str, Any]:
        """The constexpr values of ``config``, as :mod:`grokjax.ops.triton_scan` passes them."""
        return {
            "HAS_D": config.has_d,
            "HAS_BIAS": config.has_bias,
            "SOFTPLUS": config.softplus,
            "GATE": selective_scan.GATE_IDS[config.gate],
            "BLOCK_D": config.block_d,
            "N": config.n,
            "CHUNK": config.chunk,
            **self.extra_constexprs,
            **config.constexprs,
        }

    def build(self, config: KernelConfig) -> tuple[dict[str, str], dict[str, Any]]:
        """``(signature, constexprs)`` for ``triton.compiler.ASTSource``: every parameter
        typed (``"*bf16"``, ``"*fp32"``, ``"i32"`` or ``"constexpr"``), in order."""
        fn = _compilable(self.fn)
        constexprs = self.constexprs(config)
        declared = {p.name for p in fn.params if p.is_constexpr}
        if unknown := set(constexprs) - declared:
            raise ValueError(f"{self.name}: {sorted(unknown)} are not constexprs of {fn.__name__}.")
        if missing := declared - set(constexprs):
            raise ValueError(f"{self.name}: no value for the constexprs {sorted(missing)}.")
        if unknown := set(self.io_args) - set(fn.arg_names):
            raise ValueError(f"{self.name}: {sorted(unknown)} are not parameters of {fn.__name__}.")
        signature = {}
        for name in fn.arg_names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name in self.scalars:
                signature[name] = "i32"
            elif name.endswith("_ptr"):
                signature[name] = "*" + (DTYPES[config.dtype] if name in self.io_args else "fp32")
            else:
                raise ValueError(
                    f"{self.name}: parameter {name!r} is neither a pointer (*_ptr), a scalar "
                    f"{self.scalars} nor a constexpr."
                )
        return signature, constexprs

    def attrs(self, config: KernelConfig) -> dict[tuple[int, ...], list[list[Any]]]:
        """Argument attributes as jax-triton sets them: every pointer 16-byte aligned
        (``tt.divisibility`` 16), nothing on scalars."""
        signature, _ = self.build(config)
        return {
            (i,): [["tt.divisibility", 16]]
            for i, ty in enumerate(signature.values())
            if ty.startswith("*")
        }


#: The kernels to compile, by name.
KERNELS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec(
            name="selective_scan_fwd",
            fn=selective_scan.selective_scan_fwd_kernel,
            io_args=frozenset({"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr"}),
        ),
        KernelSpec(
            name="selective_scan_fwd_parallel",
            fn=selective_scan.selective_scan_fwd_parallel_kernel,
            io_args=frozenset({"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr"}),
            extra_constexprs={"T": 16},  # triton_selective_scan's default tile
        ),
        KernelSpec(
            name="selective_scan_bwd",
            fn=selective_scan.selective_scan_bwd_kernel,
            io_args=frozenset({"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "dy_ptr"}),
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class AotKernel:
    """A compiled kernel: its name, the text of every stage (``asm["ttir"]``,
    ``"ttgir"``, ``"llir"``, ``"ptx"``; ``asm["cubin"]`` is bytes) and Triton's
    metadata (``"shared"``: dynamic shared memory in bytes, ``"num_warps"``,
    ``"num_stages"``, ``"target"``: backend, arch and warp size, …);
    ``compile_seconds``: the wall time of ``triton.compile`` (small on a cache hit)."""

    name: str
    asm: Mapping[str, str | bytes]
    metadata: Mapping[str, Any]
    compile_seconds: float = 0.0


@functools.cache
def _uninterpreted_copy(module_name: str, path: str) -> ModuleType:
    """A second copy of a kernel module, loaded with Triton's interpreter off."""
    spec = importlib.util.spec_from_file_location(f"{module_name}.__aot__", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} again to compile its kernels")
    module = importlib.util.module_from_spec(spec)
    with triton.knobs.runtime.scope():
        triton.knobs.runtime.interpret = False
        spec.loader.exec_module(module)
    return module


def _compilable(fn: Any) -> JITFunction:
    """``fn`` as a compilable ``JITFunction``.

    With ``TRITON_INTERPRET=1`` set when a kernel module is imported, ``@triton.jit``
    returns interpreter functions, which ``triton.compile`` cannot lower; the same
    kernel is then taken from a copy of its module loaded with the interpreter off.
    """
    if isinstance(fn, JITFunction):
        return fn
    inner = getattr(fn, "fn", None)
    module = getattr(inner, "__module__", None)
    path = getattr(getattr(inner, "__code__", None), "co_filename", None)
    if module is None or path is None:
        raise TypeError(f"not a @triton.jit function: {fn!r}")
    return getattr(_uninterpreted_copy(module, path), inner.__name__)


def _triton_interpreted() -> bool:
    """Whether triton itself was imported with ``TRITON_INTERPRET=1``: then its own
    ``@jit`` library functions (``tl.zeros``, ``tl.sum``, …) are interpreter functions
    and nothing can be compiled in this process. The CPU kernel tests set it before
    importing triton, so a test session that runs them is such a process."""
    return not isinstance(triton.language.standard.zeros, JITFunction)


def _compile_here(
    requests: Sequence[tuple[str, KernelConfig]], arch: int, fresh: bool
) -> list[AotKernel]:
    out = []
    for name, config in requests:
        spec = KERNELS[name]
        signature, constexprs = spec.build(config)
        source = ASTSource(
            fn=_compilable(spec.fn),
            signature=signature,
            constexprs=constexprs,
            attrs=spec.attrs(config),
        )
        options = {
            "num_warps": config.num_warps,
            "num_stages": config.num_stages,
            "enable_fp_fusion": config.enable_fp_fusion,
        }
        with triton.knobs.runtime.scope(), triton.knobs.compilation.scope():
            triton.knobs.runtime.interpret = False
            if fresh:
                triton.knobs.compilation.always_compile = True
            start = time.perf_counter()
            compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
            seconds = time.perf_counter() - start
        metadata = compiled.metadata._asdict()
        metadata["target"] = dataclasses.asdict(metadata["target"])
        out.append(AotKernel(compiled.name, dict(compiled.asm), metadata, seconds))
    return out


_CHILD = f"import sys; from {__name__} import _main; _main(sys.argv[1:])"


def _compile_in_subprocess(
    requests: Sequence[tuple[str, KernelConfig]], arch: int, fresh: bool
) -> list[AotKernel]:
    """:func:`_compile_here` in a fresh Python without ``TRITON_INTERPRET``, sharing
    this process's Triton cache directory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = triton.knobs.cache.dir
    with tempfile.TemporaryDirectory(prefix="grokjax-aot-") as tmp:
        request, result = Path(tmp) / "request.pkl", Path(tmp) / "result.pkl"
        request.write_bytes(pickle.dumps((list(requests), arch, fresh)))
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(request), str(result)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"compiling {[name for name, _ in requests]} in a subprocess failed "
                f"({proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        return pickle.loads(result.read_bytes())


def compile_kernels(
    requests: Iterable[tuple[str, KernelConfig]], arch: int = 90, *, fresh: bool = False
) -> list[AotKernel]:
    """Compile each ``(kernel name, configuration)`` for ``sm_<arch>`` (no GPU needed).

    ``fresh`` skips Triton's on-disk cache (to time a real compilation). In a process
    where triton was imported with ``TRITON_INTERPRET=1`` the compilations run in one
    subprocess without it (the kernels as :data:`KERNELS` registers them on import).
    """
    requests = list(requests)
    for name, config in requests:
        if name not in KERNELS:
            raise KeyError(f"unknown kernel {name!r}; registered: {sorted(KERNELS)}")
        KERNELS[name].build(config)  # refuse a bad configuration here, not in a subprocess
    if _triton_interpreted():
        return _compile_in_subprocess(requests, arch, fresh)
    return _compile_here(requests, arch, fresh)


def compile_kernel(
    name: str, config: KernelConfig | None = None, arch: int = 90, *, fresh: bool = False
) -> AotKernel:
    """Compile the kernel ``KERNELS[name]`` at ``config`` (default: the launch
    defaults) for ``sm_<arch>``; see :func:`compile_kernels`."""
    return compile_kernels(
        [(name, KernelConfig() if config is None else config)], arch, fresh=fresh
    )[0]


def cuobjdump_path() -> Path:
    """The ``cuobjdump`` bundled with Triton's NVIDIA backend (``TRITON_CUOBJDUMP_PATH``
    first, as Triton itself looks it up)."""
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    candidates = [Path(p) for p in [os.environ.get("TRITON_CUOBJDUMP_PATH")] if p] + [bundled]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "cuobjdump, which reads a cubin's registers and memory, was not found: looked for "
        + ", ".join(str(p) for p in candidates)
        + ". It ships in the triton wheel's NVIDIA backend (pip install triton), or point "
        "TRITON_CUOBJDUMP_PATH at one from a CUDA toolkit."
    )


_FUNCTION = re.compile(r"^\s*Function\s+(\S+?):?\s*$")
_FIELD = re.compile(r"([A-Z_]+(?:\[\d+\])?):(\d+)")


def parse_resource_usage(text: str) -> dict[str, dict[str, int]]:
    """The per-function counters of ``cuobjdump --dump-resource-usage`` output:
    ``{function: {"REG": …, "STACK": …, "SHARED": …, "LOCAL": …, …}}``."""
    usage: dict[str, dict[str, int]] = {}
    function = None
    for line in text.splitlines():
        if match := _FUNCTION.match(line):
            function = match.group(1)
        elif function is not None and (fields := _FIELD.findall(line)):
            usage.setdefault(function, {}).update({k: int(v) for k, v in fields})
            function = None
    if not usage:
        raise ValueError(f"no function's resource usage in cuobjdump's output:\n{text}")
    for function, fields in usage.items():
        if missing := {"REG", "STACK", "SHARED", "LOCAL"} - set(fields):
            raise ValueError(f"cuobjdump's line for {function} lacks {sorted(missing)}:\n{text}")
    return usage


def resource_usage(compiled: AotKernel) -> dict[str, Any]:
    """What a compiled kernel uses, read from its cubin with ``cuobjdump``.

    ``registers`` per thread; ``stack_bytes`` (the stack frame, which holds register
    spills) and ``local_bytes`` per thread, and ``spills``, whether either is non-zero;
    ``shared_bytes``, the dynamic shared memory a launch requests (Triton allocates a
    kernel's shared memory so; a launch asking for more than the device's per-block
    limit fails), and ``static_shared_bytes`` as cuobjdump reads it from the cubin.
    """
    tool = cuobjdump_path()
    with tempfile.TemporaryDirectory(prefix="grokjax-aot-") as tmp:
        cubin = Path(tmp) / f"{compiled.name}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        result = subprocess.run(
            [str(tool), "--dump-resource-usage", str(cubin)],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stderr}")
    usage = parse_resource_usage(result.stdout)
    if compiled.name not in usage:
        raise ValueError(f"cuobjdump lists {sorted(usage)}, not the kernel {compiled.name}")
    fields = usage[compiled.name]
    return {
        "registers": fields["REG"],
        "stack_bytes": fields["STACK"],
        "local_bytes": fields["LOCAL"],
        "spills": fields["STACK"] > 0 or fields["LOCAL"] > 0,
        "shared_bytes": int(compiled.metadata["shared"]),
        "static_shared_bytes": fields["SHARED"],
        "num_warps": int(compiled.metadata["num_warps"]),
        "num_stages": int(compiled.metadata["num_stages"]),
        "target": f"sm_{compiled.metadata['target']['arch']}",
    }


def _main(argv: Sequence[str]) -> None:
    """The subprocess of :func:`_compile_in_subprocess`: requests in, kernels out."""
    request, result = (Path(a) for a in argv)
    requests, arch, fresh = pickle.loads(request.read_bytes())
    result.write_bytes(pickle.dumps(_compile_here(requests, arch, fresh)))
