"""Per-gradient time on the seed paper's three-body fit (Zhuang et al., ICML 2020).

Setup (systems preset "three-body-paper"): positions at 1000 times on [0, 1], dopri5
rtol 1e-7 atol 1e-8, loss = mean over times of 0.01^t * sum of squared position errors
against the true trajectory, masses at (1.0, 1.05, 0.95). One gradient dL/dmasses:
physode eager and compiled (aca, direct) against torchdiffeq odeint / odeint_adjoint and
TorchDiffEqPack odesolve, in one process, single-threaded; compile time reported apart.
diffrax (JAX/XLA, Dopri5 + PIDController, RecursiveCheckpointAdjoint) runs the same problem
in the same script from its own virtualenv (benchmarks/peer_env.py; --no-diffrax skips it).

    .venv/bin/python benchmarks/paper_three_body.py [--repeats 7] [--no-diffrax]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchdiffeq
from common import cache_line, machine_line, markdown_table, median_time, write_result
from peer_env import run_peer

import physode
import systems

try:
    from TorchDiffEqPack import odesolve
except ImportError:  # optional peer
    odesolve = None

RTOL, ATOL = 1e-7, 1e-8


def setup():
    system = systems.get("three-body-paper")
    t = torch.linspace(0.0, 1.0, 1000, dtype=torch.float64)
    with torch.no_grad():
        target = physode.odeint(system, system.y0, t, rtol=1e-11, atol=1e-12)[:, :9]
    system.set_params(masses=[1.0, 1.05, 0.95])
    weights = 0.01**t
    return system, t, target, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-diffrax", action="store_true", help="skip the JAX peer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    system, t, target, weights = setup()
    masses = system.free_parameters()

    def gradient_of(solve):
        def run():
            ys = solve()
            loss = (weights * (ys[..., :9] - target).square().sum(-1)).mean()
            return torch.autograd.grad(loss, masses)[0]
        return run

    def ours(gradient, compile_):
        return gradient_of(lambda: physode.odeint(system, system.y0, t, rtol=RTOL, atol=ATOL,
                                                  gradient=gradient, compile=compile_))

    candidates = {
        "physode aca (eager)": ours("aca", False),
        "physode direct (eager)": ours("direct", False),
        "physode aca (compiled)": ours("aca", True),
        "physode direct (compiled)": ours("direct", True),
        "torchdiffeq odeint": gradient_of(
            lambda: torchdiffeq.odeint(system, system.y0, t, rtol=RTOL, atol=ATOL)),
        "torchdiffeq odeint_adjoint": gradient_of(
            lambda: torchdiffeq.odeint_adjoint(system, system.y0, t, rtol=RTOL, atol=ATOL)),
    }
    if odesolve is not None:
        opts = {"method": "dopri5", "t0": 0.0, "t1": 1.0, "rtol": RTOL, "atol": ATOL,
                "h": None, "print_neval": False, "neval_max": 1_000_000,
                "t_eval": t.tolist()}
        candidates["TorchDiffEqPack odesolve"] = gradient_of(
            lambda: odesolve(system, system.y0, opts))
    rows, times, grads = [], {}, {}
    for name, fn in candidates.items():
        start = time.perf_counter()
        grads[name] = fn()
        first = time.perf_counter() - start
        times[name] = median_time(fn, args.repeats, warmup=1)
        compile_s = max(first - times[name], 0.0) if "compiled" in name else None
        rows.append([name, times[name], compile_s])
    peer = None if args.no_diffrax else diffrax_peer(system, t, target, weights, args.repeats)
    if peer is not None:
        name = f"diffrax {peer['diffrax']} (jax {peer['jax']}), RecursiveCheckpointAdjoint"
        times[name] = peer["seconds"]
        masses_now = system.params["masses"].detach()
        # diffrax differentiates w.r.t. the masses; ours w.r.t. log-masses: dL/dlog m = m dL/dm
        grads[name] = torch.tensor(peer["grad"], dtype=torch.float64) * masses_now
        rows.append([name, peer["seconds"], peer["compile_s"]])
    base = times["torchdiffeq odeint"]
    ref = grads["physode direct (eager)"]
    table_rows = []
    compiled_any = {name for name, _, c in rows if c is not None}
    for name, sec, compile_s in rows:
        err = ((grads[name] - ref).norm() / ref.norm()).item()
        table_rows.append([name, f"{sec * 1e3:.1f}", f"{sec / base:.3f}",
                           "" if name not in compiled_any else f"{compile_s:.1f}", f"{err:.1e}"])
    header = ["solver", "ms / gradient", "time / torchdiffeq odeint", "compile s",
              "grad diff vs physode direct"]
    text = (f"Seed paper's three-body gradient (1000 outputs, dopri5 rtol 1e-7 atol 1e-8), "
            f"medians of {args.repeats} ({machine_line()}; {cache_line()})"
            + ("" if peer is not None else "; diffrax not run") + "\n\n")
    text += markdown_table(header, table_rows)
    print(text)
    write_result("paper_three_body", text)


def diffrax_peer(system, t, target, weights, repeats: int) -> dict | None:
    """The same gradient by diffrax, in its own virtualenv (see benchmarks/peer_env.py)."""
    spec = {"y0": system.y0.tolist(), "t": t.tolist(), "target": target.tolist(),
            "weights": weights.tolist(), "G": float(system.G),
            "velocity_scale": float(system.velocity_scale),
            "masses": system.params["masses"].detach().tolist(), "rtol": RTOL, "atol": ATOL,
            "repeats": max(repeats, 7)}
    return run_peer("diffrax", "diffrax_three_body.py", spec)


if __name__ == "__main__":
    main()
