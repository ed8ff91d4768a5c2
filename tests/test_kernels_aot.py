"""Ahead-of-time compilation of the Triton selective-scan kernels for sm_90, on the CPU.

``triton.compile`` builds PTX and a cubin for an NVIDIA target without a GPU, and the
``cuobjdump`` bundled with triton reads the cubin's registers, stack, local and shared
memory. These tests compile the forward and backward kernels as jax-triton would
launch them (small block sizes, and the launch defaults) and check that they fit
sm_90: at most 255 registers per thread, no spills at the defaults, shared memory
within the per-block limit. The cuobjdump parser is also checked against captured
output, so a change of its format fails here rather than reading as zero.

Compilations go to a temporary Triton cache: real compilations, nothing left in the
user's cache. triton is a test-only dependency that ``.ci/run`` installs; with
``CI=true`` these tests fail, not skip, when it is missing.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest

if os.environ.get("CI") == "true":
    import triton
else:
    triton = pytest.importorskip("triton")

from grokjax.kernels import aot, report
from grokjax.kernels import selective_scan as scan_kernels
from grokjax.kernels.aot import (
    KERNELS,
    MAX_REGISTERS,
    SHARED_LIMIT_BYTES,
    KernelConfig,
    KernelSpec,
    compile_kernel,
    compile_kernels,
    parse_resource_usage,
    resource_usage,
)
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

SMALL = KernelConfig(block_d=8, n=4, chunk=8)
DEFAULT = KernelConfig()  # triton_selective_scan's block sizes, jax-triton's warps and stages
KERNEL_NAMES = ("selective_scan_fwd", "selective_scan_bwd")
DTYPES = ("float32", "bfloat16")

# cuobjdump --dump-resource-usage on a cubin of the forward kernel (sm_90a), with a
# second function added by hand.
CUOBJDUMP_OUTPUT = """
Resource usage:
 Common:
  GLOBAL:11 CONSTANT[4]:8
 Function selective_scan_fwd_kernel:
  REG:34 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:648 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function spilling_kernel:
  REG:255 STACK:24 SHARED:0 LOCAL:16 CONSTANT[0]:560 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


@pytest.fixture(scope="module", autouse=True)
def _fresh_triton_cache(tmp_path_factory):
    with triton.knobs.cache.scope():
        triton.knobs.cache.dir = str(tmp_path_factory.mktemp("triton-cache"))
        yield


REQUESTS = [
    (name, dataclasses.replace(config, dtype=dtype))
    for config in (SMALL, DEFAULT)
    for name in KERNEL_NAMES
    for dtype in DTYPES
]


@pytest.fixture(scope="module")
def kernels(_fresh_triton_cache) -> dict:
    """Every (kernel, configuration) of the module compiled once, together (one
    subprocess where this session imported triton in interpreter mode)."""
    return dict(zip(REQUESTS, compile_kernels(REQUESTS, arch=90), strict=True))


def check_fits_sm90(kernel, usage: dict) -> None:
    assert kernel.asm["cubin"][:4] == b"\x7fELF"
    ptx = kernel.asm["ptx"]
    assert ".target sm_90a" in ptx
    assert f".entry {kernel.name}(" in ptx
    assert usage["target"] == "sm_90"
    assert 0 < usage["registers"] <= MAX_REGISTERS
    assert usage["shared_bytes"] <= SHARED_LIMIT_BYTES[90]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_small_blocks_compile_for_sm90(kernels, name, dtype):
    config = dataclasses.replace(SMALL, dtype=dtype)
    kernel = kernels[name, config]
    usage = resource_usage(kernel)
    check_fits_sm90(kernel, usage)
    assert usage["num_warps"] == config.num_warps
    assert usage["num_stages"] == config.num_stages


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_default_blocks_fit_sm90_without_spills(kernels, name, dtype):
    kernel = kernels[name, dataclasses.replace(DEFAULT, dtype=dtype)]
    usage = resource_usage(kernel)
    check_fits_sm90(kernel, usage)
    assert usage["stack_bytes"] == 0
    assert usage["local_bytes"] == 0
    assert not usage["spills"]


def test_activation_dtype_reaches_the_ptx(kernels):
    """bfloat16 activations are loaded as 16-bit values, float32 ones are not."""
    bf16 = kernels["selective_scan_fwd", dataclasses.replace(SMALL, dtype="bfloat16")]
    fp32 = kernels["selective_scan_fwd", SMALL]
    assert "ld.global.b16" in bf16.asm["ptx"] or "ld.global.u16" in bf16.asm["ptx"]
    assert "ld.global.b16" not in fp32.asm["ptx"] and "ld.global.u16" not in fp32.asm["ptx"]


def test_signatures_follow_the_jax_launch():
    """Activations in the config's dtype; A, D, bias, k, states, checkpoints and
    gradients float32; L and DIM 32-bit integers; the Mamba path's constexprs."""
    config = KernelConfig(dtype="bfloat16")
    sig, constexprs = KERNELS["selective_scan_fwd"].build(config)
    assert list(sig) == KERNELS["selective_scan_fwd"].fn.arg_names
    assert {k: sig[k] for k in ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr")} == {
        k: "*bf16" for k in ("u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr")
    }
    for name in ("A_ptr", "D_ptr", "bias_ptr", "k_ptr", "last_ptr", "ckpt_ptr"):
        assert sig[name] == "*fp32", name
    assert sig["L"] == sig["DIM"] == "i32"
    assert constexprs == dict(
        HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, GATE=scan_kernels.GATE_IDS["silu"],
        BLOCK_D=32, N=16, CHUNK=64,
    )  # fmt: skip
    assert all(sig[k] == "constexpr" for k in constexprs)

    sig, _ = KERNELS["selective_scan_bwd"].build(config)
    assert sig["dy_ptr"] == sig["u_ptr"] == "*bf16"
    for name in ("dlast_ptr", "ckpt_ptr", "scratch_ptr", "du_ptr", "ddelta_ptr", "dB_part_ptr"):
        assert sig[name] == "*fp32", name


def test_attributes_mark_pointers_aligned_as_jax_triton_does():
    spec = KERNELS["selective_scan_fwd"]
    names = spec.fn.arg_names
    attrs = spec.attrs(KernelConfig())
    assert {names[i] for (i,) in attrs} == {n for n in names if n.endswith("_ptr")}
    assert all(value == [["tt.divisibility", 16]] for value in attrs.values())


def test_spec_refuses_constexprs_and_arguments_the_kernel_lacks():
    fwd = scan_kernels.selective_scan_fwd_kernel
    with pytest.raises(ValueError, match=r"\['T'\] are not constexprs"):
        KernelSpec("x", fwd, frozenset(), extra_constexprs={"T": 16}).build(KernelConfig())
    with pytest.raises(ValueError, match=r"\['T'\] are not constexprs"):
        KERNELS["selective_scan_fwd"].build(KernelConfig(constexprs={"T": 16}))
    with pytest.raises(ValueError, match=r"\['x_ptr'\] are not parameters"):
        KernelSpec("x", fwd, frozenset({"x_ptr"})).build(KernelConfig())
    with pytest.raises(ValueError, match="parameter 'L' is neither"):
        KernelSpec("x", fwd, frozenset(), scalars=("DIM",)).build(KernelConfig())
    with pytest.raises(KeyError, match="unknown kernel"):
        compile_kernel("nope")


def test_config_refuses_unknown_dtype_gate_and_non_power_of_two_blocks():
    with pytest.raises(ValueError, match="dtype"):
        KernelConfig(dtype="float16")
    with pytest.raises(ValueError, match="gate"):
        KernelConfig(gate="relu")
    with pytest.raises(ValueError, match="block_d must be a power of two"):
        KernelConfig(block_d=24)


def test_interpreted_kernels_are_compiled_from_an_uninterpreted_copy():
    """With TRITON_INTERPRET=1 (the CPU kernel tests) @triton.jit gives interpreter
    functions; compiling one takes the same kernel from a fresh copy of its module."""
    fwd = scan_kernels.selective_scan_fwd_kernel
    jit = aot._compilable(InterpretedFunction(fwd.fn))
    assert isinstance(jit, JITFunction)
    assert jit.__name__ == "selective_scan_fwd_kernel"
    assert jit.arg_names == fwd.arg_names


def test_a_process_in_interpreter_mode_compiles_in_a_subprocess(kernels, monkeypatch):
    """Where triton was imported with TRITON_INTERPRET=1 (a session that ran the CPU
    kernel tests), compilation goes to a subprocess; the result is the same kernel."""
    monkeypatch.setattr(aot, "_triton_interpreted", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    (kernel,) = compile_kernels([("selective_scan_fwd", SMALL)], arch=90)
    assert kernel.asm["ptx"] == kernels["selective_scan_fwd", SMALL].asm["ptx"]
    assert resource_usage(kernel) == resource_usage(kernels["selective_scan_fwd", SMALL])


def test_parse_resource_usage_reads_every_function():
    usage = parse_resource_usage(CUOBJDUMP_OUTPUT)
    assert usage["selective_scan_fwd_kernel"]["REG"] == 34
    assert usage["selective_scan_fwd_kernel"]["SHARED"] == 1024
    assert usage["selective_scan_fwd_kernel"]["CONSTANT[0]"] == 648
    assert usage["spilling_kernel"] == {
        "REG": 255, "STACK": 24, "SHARED": 0, "LOCAL": 16, "CONSTANT[0]": 560,
        "TEXTURE": 0, "SURFACE": 0, "SAMPLER": 0,
    }  # fmt: skip
    assert "Common" not in usage


def test_parse_resource_usage_fails_loudly():
    with pytest.raises(ValueError, match="no function"):
        parse_resource_usage("Resource usage:\n Common:\n  GLOBAL:11\n")
    with pytest.raises(ValueError, match="no function"):
        parse_resource_usage("cuobjdump info    : File 'x.cubin' does not contain device code")
    with pytest.raises(ValueError, match=r"lacks \['STACK'\]"):
        parse_resource_usage(" Function k:\n  REG:40 SHARED:0 LOCAL:0\n")


def test_resource_usage_flags_spills(kernels, monkeypatch):
    """What a spilling kernel's cubin reads as, from the captured output."""
    kernel = dataclasses.replace(kernels["selective_scan_fwd", SMALL], name="spilling_kernel")

    class Done:
        returncode, stdout, stderr = 0, CUOBJDUMP_OUTPUT, ""

    monkeypatch.setattr(aot.subprocess, "run", lambda *a, **k: Done())
    usage = resource_usage(kernel)
    assert usage["registers"] == 255
    assert (usage["stack_bytes"], usage["local_bytes"], usage["spills"]) == (24, 16, True)
    assert usage["shared_bytes"] == kernel.metadata["shared"]
    assert usage["static_shared_bytes"] == 0
    with pytest.raises(ValueError, match="not the kernel other_kernel"):
        resource_usage(dataclasses.replace(kernel, name="other_kernel"))


def test_missing_cuobjdump_is_named(kernels, monkeypatch, tmp_path):
    monkeypatch.setattr(triton, "__file__", str(tmp_path / "triton" / "__init__.py"))
    monkeypatch.delenv("TRITON_CUOBJDUMP_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match=r"cuobjdump.*was not found"):
        aot.cuobjdump_path()
    with pytest.raises(FileNotFoundError, match="cuobjdump"):
        resource_usage(kernels["selective_scan_fwd", SMALL])


def test_report_flags_and_exit_status(monkeypatch):
    usage = {"registers": 300, "spills": True, "shared_bytes": 300 * 1024}
    row = report.Row("k", DEFAULT, default=True, usage=usage)
    assert report.flags(row, 90) == ["SPILLS", "REGS>255", "SMEM>227KiB"]
    assert report.flags(row, 75) == ["SPILLS", "REGS>255"]  # no shared limit known
    assert report.flags(report.Row("k", DEFAULT, True, error="boom"), 90) == ["FAILED"]

    configs = list(report.configurations(quick=False, num_stages=3))
    assert [c for c, default in configs if default] == [
        KernelConfig(dtype="float32"),
        KernelConfig(dtype="bfloat16"),
    ]
    assert len(configs) == len(set(c for c, _ in configs)) == 12

    def failing(kernel, config, default, arch):
        return report.Row(kernel, config, default, error="RuntimeError: ptxas failed")

    monkeypatch.setattr(report, "compile_row", failing)
    assert report.main(["--quick"]) == 1


def test_report_prints_a_row_per_default_compilation():
    out = io.StringIO()
    rows = report.run(arch=90, quick=True, out=out)
    assert len(rows) == 2 * len(KERNELS)
    assert all(r.default and r.error is None and not report.flags(r, 90) for r in rows)
    lines = out.getvalue().splitlines()
    assert lines[1].split()[:3] == ["kernel", "dtype", "BLOCK_D"]
    for name in KERNELS:
        assert sum(line.startswith(f"{name} *") for line in lines) == 2


def test_cuobjdump_is_bundled_with_triton():
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    assert bundled.is_file()
    assert aot.cuobjdump_path().is_file()
