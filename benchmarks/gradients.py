"""Gradients, physode (aca / direct / adjoint) vs torchdiffeq and TorchDiffEqPack.

(a) Three-body problem (planar, G = 1, figure-eight start, masses (1, 1, 1) as learnable
    parameters, one period): loss = squared distance of the final positions from a target;
    time per gradient and relative error of dL/dmasses against a tight reference
    (physode direct, dopri8, rtol = atol = 1e-13) at rtol = atol in {1e-4, 1e-6, 1e-8}.
(b) Neural vector field: batch 256, state 32, MLP 32 -> 256 -> 256 -> 32 (tanh),
    t in [0, 20], dopri5 rtol 1e-6 atol 1e-7, one forward + backward: peak resident-memory
    growth (Linux VmHWM, reset before each run) and time.

Everything runs in one process, single-threaded; medians of --repeats runs.

    .venv/bin/python benchmarks/gradients.py [--repeats 5] [--skip-mlp]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import time
from pathlib import Path

import torch
import torchdiffeq
from common import FigureEight, MLPField, machine_line, markdown_table, median_time, write_result

import physode

try:
    from TorchDiffEqPack import odesolve, odesolve_adjoint
except ImportError:  # optional peer
    odesolve = odesolve_adjoint = None


# ---- (a) three-body ------------------------------------------------------------------------

T_END = FigureEight.period
TARGET = FigureEight.y0()[:6] + 0.05


def three_body_loss(yT: torch.Tensor) -> torch.Tensor:
    return (yT[..., :6] - TARGET).square().sum()


def physode_grad(gradient: str, tol: float, method: str = "dopri5"):
    def run():
        f = FigureEight()
        ys = physode.odeint(f, FigureEight.y0(), torch.tensor([0.0, T_END]), rtol=tol, atol=tol,
                            method=method, gradient=gradient)
        return torch.autograd.grad(three_body_loss(ys[-1]), f.masses)[0]
    return run


def torchdiffeq_grad(adjoint: bool, tol: float):
    def run():
        f = FigureEight()
        solver = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
        ys = solver(f, FigureEight.y0(), torch.tensor([0.0, T_END], dtype=torch.float64),
                    rtol=tol, atol=tol, method="dopri5")
        return torch.autograd.grad(three_body_loss(ys[-1]), f.masses)[0]
    return run


def tdepack_options(tol: float, t1: float) -> dict:
    return {"method": "dopri5", "t0": 0.0, "t1": t1, "rtol": tol, "atol": tol, "h": None,
            "print_neval": False, "neval_max": 1_000_000, "t_eval": None}


def tdepack_grad(memory_mode: bool, tol: float):
    def run():
        f = FigureEight()
        solver = odesolve_adjoint if memory_mode else odesolve
        yT = solver(f, FigureEight.y0(), options=tdepack_options(tol, T_END))
        return torch.autograd.grad(three_body_loss(yT), f.masses)[0]
    return run


def three_body_table(repeats: int) -> str:
    ref = physode_grad("direct", 1e-13, method="dopri8")()
    rows = []
    for tol in (1e-4, 1e-6, 1e-8):
        candidates = {
            "physode aca": physode_grad("aca", tol),
            "physode direct": physode_grad("direct", tol),
            "physode adjoint": physode_grad("adjoint", tol),
            "torchdiffeq odeint": torchdiffeq_grad(False, tol),
            "torchdiffeq odeint_adjoint": torchdiffeq_grad(True, tol),
        }
        if odesolve is not None:
            candidates["TorchDiffEqPack odesolve"] = tdepack_grad(False, tol)
            candidates["TorchDiffEqPack odesolve_adjoint"] = tdepack_grad(True, tol)
        base = None
        for name, fn in candidates.items():
            try:
                g = fn()
                err = ((g - ref).norm() / ref.norm()).item()
                sec = median_time(fn, repeats)
            except Exception as exc:  # a peer failing is reported, not fatal
                rows.append([f"{tol:.0e}", name, "failed", type(exc).__name__, ""])
                continue
            if name == "torchdiffeq odeint":
                base = sec
            rows.append([f"{tol:.0e}", name, f"{sec * 1e3:.1f}", f"{err:.1e}", sec])
        for row in rows[-len(candidates):]:
            if isinstance(row[-1], float) and base:
                row[-1] = f"{row[-1] / base:.2f}"
    header = ["rtol=atol", "solver", "ms / gradient", "rel. error dL/dm",
              "time / torchdiffeq odeint"]
    return markdown_table(header, rows)


# ---- (b) neural vector field memory --------------------------------------------------------

def _reset_peak() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    Path("/proc/self/clear_refs").write_text("5")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def peak_growth_mib(fn) -> tuple[float, float]:
    """Peak resident-memory growth (MiB) and wall time (s) of one call of ``fn``."""
    _reset_peak()
    before = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    fn()
    sec = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    return (peak - before) / 1024, sec


def mlp_table(repeats: int) -> str:
    torch.manual_seed(0)
    field = MLPField(32, widths=(256, 256)).float()
    y0 = torch.randn(256, 32) * 0.5
    t = torch.tensor([0.0, 20.0])

    def loss(yT):
        return yT.square().mean()

    def grad_of(solve):
        def run():
            yT = solve()
            return torch.autograd.grad(loss(yT), list(field.parameters()))
        return run

    candidates = {
        "physode aca": grad_of(lambda: physode.odeint(field, y0, t, rtol=1e-6, atol=1e-7)[-1]),
        "physode direct": grad_of(lambda: physode.odeint(field, y0, t, rtol=1e-6, atol=1e-7,
                                                         gradient="direct")[-1]),
        "physode adjoint": grad_of(lambda: physode.odeint(field, y0, t, rtol=1e-6, atol=1e-7,
                                                          gradient="adjoint")[-1]),
        "torchdiffeq odeint": grad_of(lambda: torchdiffeq.odeint(field, y0, t, rtol=1e-6,
                                                                 atol=1e-7)[-1]),
        "torchdiffeq odeint_adjoint": grad_of(lambda: torchdiffeq.odeint_adjoint(
            field, y0, t, rtol=1e-6, atol=1e-7)[-1]),
    }
    if odesolve is not None:
        opts = {**tdepack_options(1e-6, 20.0), "atol": 1e-7}
        candidates["TorchDiffEqPack odesolve"] = grad_of(lambda: odesolve(field, y0, opts))
        candidates["TorchDiffEqPack odesolve_adjoint"] = grad_of(
            lambda: odesolve_adjoint(field, y0, opts))
    results = {}
    for name, fn in candidates.items():
        try:
            fn()  # warm-up
            mems, secs = zip(*(peak_growth_mib(fn) for _ in range(repeats)))
        except Exception as exc:
            results[name] = (float("nan"), float("nan"), type(exc).__name__)
            continue
        results[name] = (sorted(mems)[len(mems) // 2], sorted(secs)[len(secs) // 2], "")
    base_mem, base_sec, _ = results["torchdiffeq odeint"]
    rows = []
    for name, (mem, sec, note) in results.items():
        rows.append([name, f"{mem:.0f}", f"{mem / base_mem:.2f}", f"{sec:.2f}",
                     f"{sec / base_sec:.2f}", note])
    header = ["solver", "peak MiB", "mem / torchdiffeq odeint", "s / gradient",
              "time / torchdiffeq odeint", "note"]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-mlp", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = f"Gradient benchmarks, medians of {args.repeats} ({machine_line()})\n\n"
    text += "(a) Three-body problem, dL/dmasses, dopri5, float64\n\n"
    text += three_body_table(args.repeats) + "\n"
    print(text, flush=True)
    if not args.skip_mlp:
        mlp = mlp_table(args.repeats)
        text += ("\n(b) Neural vector field, batch 256, MLP 32-256-256-32, t in [0, 20], "
                 "float32, one forward + backward\n\n" + mlp + "\n")
        print(mlp)
    write_result("gradients", text)


if __name__ == "__main__":
    main()
