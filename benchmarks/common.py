"""Shared helpers for the benchmarks: problems, timing (medians) and markdown tables.

Timing belongs here, never in tests. These machines are noisy: compare ratios measured
side by side in one process, not absolute times.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(x: object) -> str:
        if isinstance(x, float):
            return f"{x:.3g}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, text: str) -> Path:
    """Write a benchmark's markdown table to benchmarks/results/NAME.md (atomically)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


def cache_line() -> str:
    """How the compile times above were met: inductor's FX-graph cache hits and misses in
    this process (a warm cache from an earlier run makes "compile s" the tracing only)."""
    from torch._dynamo.utils import counters

    c = counters["inductor"]
    return (f"inductor cache: {c['fxgraph_cache_hit']} hits, {c['fxgraph_cache_miss']} "
            f"misses")


def machine_line() -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"{os.cpu_count()} CPU(s)")


class FigureEight(torch.nn.Module):
    """Planar three-body problem, G = 1, with learnable masses (Chenciner & Montgomery)."""

    def __init__(self, masses=(1.0, 1.0, 1.0)):
        super().__init__()
        self.masses = torch.nn.Parameter(torch.tensor(masses, dtype=torch.float64))

    def forward(self, t, y):
        pos = y[..., :6].reshape(*y.shape[:-1], 3, 2)
        d = pos[..., None, :, :] - pos[..., :, None, :]
        r3 = (d.square().sum(-1) + torch.eye(3, dtype=y.dtype)) ** 1.5
        acc = (self.masses[:, None] * d / r3[..., None]).sum(-2)
        return torch.cat([y[..., 6:], acc.reshape(*y.shape[:-1], 6)], dim=-1)

    @staticmethod
    def y0() -> torch.Tensor:
        r1 = torch.tensor([0.97000436, -0.24308753], dtype=torch.float64)
        v3 = torch.tensor([-0.93240737, -0.86473146], dtype=torch.float64)
        return torch.cat([r1, -r1, torch.zeros(2, dtype=torch.float64), -v3 / 2, -v3 / 2, v3])

    period = 6.32591398


class MLPField(torch.nn.Module):
    """Neural vector field dy/dt = MLP(y) (tanh)."""

    def __init__(self, dim: int = 32, widths=(64,), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        last = dim
        for w in widths:
            layers += [torch.nn.Linear(last, w), torch.nn.Tanh()]
            last = w
        layers.append(torch.nn.Linear(last, dim))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, t, y):
        return self.net(y)
