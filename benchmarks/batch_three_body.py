"""A batch of three-body systems with different masses: one gradient, per-sample step sizes.

The seed paper's three-body problem (Zhuang et al., ICML 2020; see paper_three_body.py:
1000 outputs on [0, 1], dopri5 rtol 1e-7 atol 1e-8, loss = mean over times of
0.01^t * squared position error against the true trajectory), solved for B systems whose
masses differ (seeded, +-5 % around (1.0, 1.05, 0.95)) with ``per_sample=True``: each
system takes its own steps. One gradient of the summed loss with respect to all B x 3
masses, compiled (``compile=True``: the whole per-sample solve and ACA's reverse sweep as
compiled loops), against the gradient of one system by the compiled single-solve loop.
Target (issue 13): the batch of 64 in <= 4x the time of one system. Also shown: the eager
per-sample batch, and one system solved as a batch of one. The batch's gradient of two
samples is checked against those systems solved alone.

    .venv/bin/python benchmarks/batch_three_body.py [--batch 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import cache_line, machine_line, markdown_table, median_time, write_result
from paper_three_body import ATOL, RTOL, setup

import physode


class ThreeBodyBatch(torch.nn.Module):
    """Newtonian three-body field, row-wise over a batch of systems with their own masses
    (``masses`` of shape (B, 3)); the state of each row is (positions 3x3, velocities 3x3)
    as in systems.nbody.NBody, with its G and velocity scale."""

    def __init__(self, masses: torch.Tensor, G: float, velocity_scale: float) -> None:
        super().__init__()
        self.masses = torch.nn.Parameter(masses.clone())
        self.G, self.K2 = G, velocity_scale

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B = y.shape[0]
        r, v = y[:, :9].reshape(B, 3, 3), y[:, 9:].reshape(B, 3, 3)
        diff = r.unsqueeze(1) - r.unsqueeze(2)  # r_j - r_i at [b, i, j]
        eye = torch.eye(3, dtype=y.dtype, device=y.device)
        inv = torch.rsqrt(diff.square().sum(-1) + eye) * (1.0 - eye)
        acc = self.G * torch.einsum("bij,bijd->bid", inv**3 * self.masses[:, None, :], diff)
        return torch.cat([self.K2 * v.reshape(B, 9), acc.reshape(B, 9)], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    system, t, target, weights = setup()
    y0 = system.y0.detach()
    G, K2 = float(system.G), float(system.velocity_scale)
    gen = torch.Generator().manual_seed(0)
    base = torch.tensor([1.0, 1.05, 0.95], dtype=torch.float64)
    masses = base * (1 + 0.05 * (2 * torch.rand(args.batch, 3, generator=gen,
                                                dtype=torch.float64) - 1))

    def loss_of(ys: torch.Tensor) -> torch.Tensor:  # ys: (n, B, 18)
        err = (ys[..., :9] - target[:, None, :]).square().sum(-1)
        return (weights[:, None] * err).mean(0).sum()

    def batch_gradient(field: ThreeBodyBatch, compile_: bool, per_sample: bool = True):
        start = y0.expand(field.masses.shape[0], -1)

        def run() -> torch.Tensor:
            ys = physode.odeint(field, start, t, rtol=RTOL, atol=ATOL, compile=compile_,
                                per_sample=per_sample)
            return torch.autograd.grad(loss_of(ys), field.masses)[0]
        return run

    batch = ThreeBodyBatch(masses, G, K2)
    one = ThreeBodyBatch(masses[:1], G, K2)
    candidates = {
        "one system, compiled loop (per_sample=False)": batch_gradient(one, True, False),
        "one system as a batch of 1, compiled (per_sample=True)": batch_gradient(one, True),
        f"batch of {args.batch}, compiled (per_sample=True)": batch_gradient(batch, True),
        f"batch of {args.batch}, eager (per_sample=True)": batch_gradient(batch, False),
    }
    rows, times, grads = [], {}, {}
    for name, fn in candidates.items():
        start = time.perf_counter()
        grads[name] = fn()
        first = time.perf_counter() - start
        reps = args.repeats if "eager" not in name else max(1, args.repeats // 3)
        times[name] = median_time(fn, reps, warmup=0 if "eager" in name else 1)
        rows.append([name, times[name], max(first - times[name], 0.0) if "compiled" in name
                     else None])
    # the batch's gradient, sample by sample, against those systems solved alone
    check = []
    for b in (0, args.batch - 1):
        alone = batch_gradient(ThreeBodyBatch(masses[b:b + 1], G, K2), False, False)()
        ours = grads[f"batch of {args.batch}, compiled (per_sample=True)"][b]
        check.append(((ours - alone[0]).norm() / alone[0].norm()).item())
    with torch.no_grad():
        sol = physode.solve(batch, y0.expand(args.batch, -1), t, rtol=RTOL, atol=ATOL,
                            per_sample=True)
    accepted = [s.accepted for s in sol.stats.samples]
    base_t = times["one system, compiled loop (per_sample=False)"]
    table = [[name, f"{sec * 1e3:.1f}", f"{sec / base_t:.2f}",
              "" if c is None else f"{c:.1f}"] for name, sec, c in rows]
    header = ["solve", "ms / gradient", "time / one system", "compile s"]
    text = (f"Batch of {args.batch} three-body systems with different masses, one gradient "
            f"(1000 outputs, dopri5 rtol {RTOL:g} atol {ATOL:g}); medians of {args.repeats} "
            f"({machine_line()}; {cache_line()}); accepted steps per sample "
            f"{min(accepted)}-{max(accepted)}; "
            f"gradient of samples 0 and {args.batch - 1} vs each solved alone: relative "
            f"difference {max(check):.1e}\n\n")
    text += markdown_table(header, table)
    print(text)
    write_result("batch_three_body", text)


if __name__ == "__main__":
    main()
