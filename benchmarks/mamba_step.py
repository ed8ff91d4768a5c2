"""Time the Mamba LM's training step in the real trainer program, against its old parts.

Builds the ``mamba-swelu`` preset's interval function (:func:`grokjax.train.step.
make_interval_fn`: sampling, forward, backward, AdamW, evaluation) and times it after
compilation, per training step, in three variants in this process:

- ``current``: the block as shipped (causal conv as shifted multiply-adds, the
  reference scan with its written-out backward);
- ``grouped conv``: the causal conv through XLA's grouped convolution
  (``lax.conv_general_dilated``, what ``nnx.Conv`` runs), as before session 5;
- ``grouped conv + autodiff scan``: also the reference scan differentiated by JAX.

Prints ms per step and each variant's ratio to ``current``.

    python benchmarks/mamba_step.py [--members 1] [--interval 10] [--calls 2]
"""

from __future__ import annotations

import argparse
import importlib
import time

import jax
import jax.numpy as jnp
from jax import lax

import grokjax.nn.mamba as mamba
from grokjax.train import apply_overrides, resolve, select_methods
from grokjax.train.state import init_groups
from grokjax.train.step import make_interval_fn

scan_module = importlib.import_module("grokjax.ops.selective_scan")


def grouped_conv(x_BLE, kernel_KE, bias_E):
    """The causal depthwise conv as XLA's grouped convolution (``nnx.Conv``'s call)."""
    k, e = kernel_KE.shape
    y = lax.conv_general_dilated(
        x_BLE,
        kernel_KE[:, None, :],
        window_strides=(1,),
        padding=[(k - 1, 0)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=e,
    )
    return y + bias_E


def autodiff_scan(dt, A, dtu, B, C):
    """The reference forward scan, differentiated by JAX (no custom VJP)."""
    y, h_last, _ = scan_module._scan_states(dt, A, dtu, B, C)
    return y, h_last


def time_step(members: int, interval: int, calls: int) -> float:
    config = apply_overrides(
        resolve("mamba-swelu"),
        ["tokens_per_param=0", f"eval_every={interval}", f"methods.0.seeds={list(range(members))}"],
    )
    config = select_methods(config, ["silu"])
    task, groups, states = init_groups(config)
    fn = make_interval_fn(groups, task, interval, "vmap")
    compiled = jax.jit(fn, donate_argnums=0).lower(states, jnp.int32(0)).compile()
    states, metrics = compiled(states, jnp.int32(0))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(calls):
        states, metrics = compiled(states, jnp.int32(interval * (i + 1)))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / (calls * interval) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1, help="SiLU seeds under vmap")
    parser.add_argument("--interval", type=int, default=10, help="steps per compiled call")
    parser.add_argument("--calls", type=int, default=2)
    args = parser.parse_args()
    current_conv, current_scan = mamba.causal_depthwise_conv, scan_module._scan_reference
    variants = {
        "current": (current_conv, current_scan),
        "grouped conv": (grouped_conv, current_scan),
        "grouped conv + autodiff scan": (grouped_conv, autodiff_scan),
    }
    print(
        f"mamba-swelu preset (batch 64, length 64, d_model 64, 2 layers), {args.members} "
        f"member(s), {jax.devices()[0].platform}, ms per training step (compile excluded)"
    )
    results = {}
    try:
        for name, (conv, scan) in variants.items():
            mamba.causal_depthwise_conv, scan_module._scan_reference = conv, scan
            results[name] = time_step(args.members, args.interval, args.calls)
            print(f"{name:30s} {results[name]:9.1f}")
    finally:
        mamba.causal_depthwise_conv, scan_module._scan_reference = current_conv, current_scan
    for name, ms in results.items():
        print(f"{name!r} / 'current': {ms / results['current']:.2f}x")


if __name__ == "__main__":
    main()
