"""The memory helpers of benchmarks/train_throughput.py (member scaling)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

PATH = pathlib.Path(__file__).parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput_bench", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_per_member_and_largest_fit(bench):
    assert bench.per_member_bytes(100.0, 400.0, 4) == 100.0
    assert bench.per_member_bytes(100.0, 100.0, 1) is None
    # peak(1) 1 GB, 170 MB per further member, 16 GB: 1 + floor(15 GB / 170 MB)
    gb, mb = 2**30, 2**20
    assert bench.largest_fitting(gb, 170 * mb, 16 * gb) == 1 + (15 * 1024) // 170
    assert bench.largest_fitting(gb, 170 * mb, gb) == 1
    assert bench.largest_fitting(gb, 170 * mb, gb - 1) == 0
    assert bench.largest_fitting(gb, 0.0, 2 * gb) == sys.maxsize


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="Linux /proc")
def test_memory_readers_see_this_process_grow(bench):
    import os

    before = bench.peak_rss_bytes()
    assert before >= bench.rss_bytes(os.getpid()) > 0
    block = bytearray(64 * 2**20)  # touched: resident
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert bench.peak_rss_bytes() >= before
    assert bench.peak_rss_bytes() >= bench.rss_bytes(os.getpid())
    assert bench.total_bytes() >= bench.available_bytes() > 0
    assert bench.rss_bytes(2**31 - 1) is None  # no such process
    del block


def test_device_memory_without_stats(bench):
    class NoStats:
        def memory_stats(self):
            return None

    class Stats:
        def memory_stats(self):
            return {"peak_bytes_in_use": 5, "bytes_limit": 9, "bytes_in_use": 1}

    assert bench.device_memory(NoStats()) == (None, None)
    assert bench.device_memory(Stats()) == (5, 9)
