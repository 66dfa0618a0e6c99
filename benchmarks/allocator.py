"""The small-block CPU cache (physode/ode/allocator.py) on and off, in one process.

Compiled solver loops allocate every buffer of their body again on every iteration; this
measures what serving those from the cache instead of glibc's aligned-allocation path
saves, on the compiled paths whose per-step cost the issues track:

- the seed paper's three-body gradient (paper_three_body.py: ACA, compiled loop);
- a batch of 64 three-body systems, ``per_sample=True`` (batch_three_body.py);
- the two-enzyme cascade's simulation and forward sensitivities, RODAS5P, rtol 1e-8
  (stiff_kinetics.py).

Each case is timed with the cache on and off in alternating rounds (``--rounds``, each the
median of ``--repeats`` calls), and the table reports the medians over rounds and their
ratio. One thread.

    .venv/bin/python benchmarks/allocator.py [--rounds 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from batch_three_body import ThreeBodyBatch
from common import machine_line, markdown_table, median_time, write_result
from paper_three_body import ATOL, RTOL, setup
from stiff_kinetics import TOL, cascade, sensitivities

import physode
from physode.ode import allocator


def cases() -> dict[str, Callable[[], object]]:
    system, t, target, weights = setup()
    masses = system.free_parameters()

    def three_body() -> object:
        ys = physode.odeint(system, system.y0, t, rtol=RTOL, atol=ATOL, compile=True)
        loss = (weights * (ys[..., :9] - target).square().sum(-1)).mean()
        return torch.autograd.grad(loss, masses)[0]

    gen = torch.Generator().manual_seed(0)
    spread = 1 + 0.05 * (2 * torch.rand(64, 3, generator=gen, dtype=torch.float64) - 1)
    batch = ThreeBodyBatch(torch.tensor([1.0, 1.05, 0.95], dtype=torch.float64) * spread,
                           float(system.G), float(system.velocity_scale))
    start = system.y0.detach().expand(64, -1)

    def batch_64() -> object:
        ys = physode.odeint(batch, start, t, rtol=RTOL, atol=ATOL, compile=True,
                            per_sample=True)
        err = (ys[..., :9] - target[:, None, :]).square().sum(-1)
        return torch.autograd.grad((weights[:, None] * err).mean(0).sum(), batch.masses)[0]

    net, tc = cascade()

    def cascade_sim() -> object:
        with torch.no_grad():
            return physode.solve(net, net.y0, tc, method="rodas5p", compile=True, **TOL)

    return {"three-body gradient (ACA, compiled)": three_body,
            "64 three-body systems, gradient (per_sample, compiled)": batch_64,
            "cascade simulation (rodas5p, compiled)": cascade_sim,
            "cascade sensitivities (rodas5p, compiled)":
                lambda: sensitivities(net, tc, "rodas5p", True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not allocator.enable():
        raise SystemExit("the small-block cache could not be built (see the physode log)")
    rows = []
    for name, fn in cases().items():
        fn()  # compile
        on, off = [], []
        for _ in range(args.rounds):
            allocator.enable()
            on.append(median_time(fn, args.repeats, warmup=1))
            allocator.disable()
            off.append(median_time(fn, args.repeats, warmup=1))
        allocator.enable()
        a, b = statistics.median(on), statistics.median(off)
        rows.append([name, f"{b * 1e3:.1f}", f"{a * 1e3:.1f}", f"{b / a:.2f}"])
        print(rows[-1], flush=True)
    text = (f"Small-block CPU cache on and off, compiled loops; medians over {args.rounds} "
            f"alternating rounds of {args.repeats} calls ({machine_line()})\n\n")
    text += markdown_table(["case", "c10 allocator ms", "small-block cache ms",
                            "speed-up"], rows)
    print(text)
    write_result("allocator", text)


if __name__ == "__main__":
    main()
