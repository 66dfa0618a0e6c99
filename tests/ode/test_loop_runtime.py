"""What the compiled loops run with: the small-block cache in front of c10's CPU allocator
(physode/ode/allocator.py) and the compile options (physode/ode/loop_compile.py)."""

from __future__ import annotations

import logging
import math
import multiprocessing
import shutil

import pytest
import torch

from physode.ode import allocator

needs_compiler = pytest.mark.skipif(allocator._compiler() is None, reason="no C++ compiler")


@needs_compiler
def test_freed_small_blocks_are_handed_out_again_with_the_values_written() -> None:
    assert allocator.enable()
    torch.empty(100, dtype=torch.float64)  # a 800-byte block, freed at once
    hits = allocator.counts()[0]
    again = torch.arange(100, dtype=torch.float64)
    assert allocator.counts()[0] > hits  # served from the stack the first block went to
    assert again.data_ptr() % 64 == 0  # c10's alignment
    assert torch.equal(again, torch.arange(100.0, dtype=torch.float64))
    large_before = allocator.counts()
    big = torch.ones(1 << 16, dtype=torch.float64)  # 512 KiB: c10's allocator
    assert allocator.counts() == large_before
    assert float(big.sum()) == float(1 << 16)


@needs_compiler
def test_disable_hands_the_cpu_back_and_cached_blocks_still_free() -> None:
    assert allocator.enable()
    kept = torch.zeros(10)
    allocator.disable()
    try:
        before = allocator.counts()
        torch.zeros(10)
        assert allocator.counts() == before  # c10's allocator now
        del kept  # allocated by the cache, freed after it left: back to its stack
    finally:
        assert allocator.enable()
    before = allocator.counts()
    torch.zeros(10)
    assert allocator.counts()[0] == before[0] + 1


def test_the_system_setting_leaves_c10_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHYSODE_CPU_ALLOCATOR", "system")
    assert not allocator.enable()


def test_a_failed_build_logs_why_and_changes_nothing(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path, caplog) -> None:
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` to stand in for a broken compiler")
    monkeypatch.setattr(allocator, "_STATE", {})
    monkeypatch.setattr(allocator, "_compiler", lambda: false)
    monkeypatch.setenv("PHYSODE_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="physode"):
        assert not allocator.enable()
    assert "small-block CPU cache not built" in caplog.text
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no half-written library
    assert allocator.counts() == (0, 0)


def _allocate_in_child(queue: multiprocessing.Queue) -> None:
    queue.put(float(torch.arange(50, dtype=torch.float64).sum()))


@needs_compiler
def test_a_forked_child_allocates() -> None:
    assert allocator.enable()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_allocate_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 1225.0


def test_loop_options_make_while_loop_cacheable_by_the_name_torch_checks() -> None:
    """The name in ``unsafe_marked_cacheable_functions`` must be the one torch builds for
    the operator, or the compile cache silently stays off for the solver loops."""
    from torch._higher_order_ops.while_loop import while_loop_op

    from physode.ode.loop_compile import loop_options

    options = loop_options()
    assert options["cpp_wrapper"] is True
    assert not while_loop_op.cacheable()
    with torch._inductor.config.patch(
            unsafe_marked_cacheable_functions=options["unsafe_marked_cacheable_functions"]):
        assert while_loop_op.cacheable()


_CACHED_SOLVE = """
import json, torch, physode
from torch._dynamo.utils import counters
y = physode.odeint(lambda t, y: -0.7 * y, torch.ones(3, dtype=torch.float64),
                   torch.linspace(0, 2, 5, dtype=torch.float64), compile=True)
print(json.dumps({"y": y[-1].tolist(), "hits": counters["inductor"]["fxgraph_cache_hit"]}))
"""


@pytest.mark.slow
@needs_compiler
def test_a_second_process_takes_the_compiled_loop_from_the_cache(tmp_path) -> None:
    """The loop graphs reach inductor's on-disk cache (torch leaves ``while_loop`` out
    unless told) and a process that loads them computes what the first one compiled."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
               PHYSODE_CACHE_DIR=str(tmp_path / "physode"))
    runs = [json.loads(subprocess.run([sys.executable, "-c", _CACHED_SOLVE], env=env,
                                      check=True, capture_output=True, text=True,
                                      timeout=600).stdout.strip().splitlines()[-1])
            for _ in range(2)]
    assert runs[0]["hits"] == 0 and runs[1]["hits"] >= 1
    assert runs[1]["y"] == runs[0]["y"]
    assert abs(runs[0]["y"][0] - math.exp(-1.4)) < 1e-5
