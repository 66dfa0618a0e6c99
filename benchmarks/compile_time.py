"""What compiling costs a fresh process: the first compiled gradient and the demo's fit.

Issue 13's targets: the first gradient of the seed's three-body problem (ACA, compiled
loops) in a fresh process within 15 s with empty caches and 2 s with warm ones, and
``physode demo`` from a fresh clone finishing its fit within 20 s. Each row is a new
Python process. "Cold" gives it empty folders for torch's inductor cache
(``TORCHINDUCTOR_CACHE_DIR``) and physode's (``PHYSODE_CACHE_DIR``: the allocator library
and the vector-ISA record); "warm" is the next process on the same folders. The first
gradient is timed from the call to ``odeint`` to the gradient (imports and the reference
trajectory before it), and split with torch's own compile metrics
(``torch._dynamo.utils.compilation_time_metrics``): dynamo's bytecode tracing, the
backend (AOT autograd and inductor: lowering, C++ generation, the C++ compiler, or the
cache load), and of that the C++ compiler alone. The demo row is the fit time the
command prints and the whole command's wall time.

    .venv/bin/python benchmarks/compile_time.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line, markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent

FIRST_GRADIENT = """
import json, sys, time
t0 = time.perf_counter()
import torch
sys.path.insert(0, {bench!r})
from paper_three_body import ATOL, RTOL, setup
import physode
from torch._dynamo.utils import compilation_time_metrics as m
torch.set_num_threads(1)
t_import = time.perf_counter() - t0
system, t, target, weights = setup()
masses = system.free_parameters()
start = time.perf_counter()
ys = physode.odeint(system, system.y0, t, rtol=RTOL, atol=ATOL, compile=True)
loss = (weights * (ys[..., :9] - target).square().sum(-1)).mean()
torch.autograd.grad(loss, masses)
first = time.perf_counter() - start
start = time.perf_counter()
ys = physode.odeint(system, system.y0, t, rtol=RTOL, atol=ATOL, compile=True)
loss = (weights * (ys[..., :9] - target).square().sum(-1)).mean()
torch.autograd.grad(loss, masses)
again = time.perf_counter() - start
total = lambda key: float(sum(m.get(key, [])))
print(json.dumps({{"import": t_import, "first": first, "again": again,
                  "tracing": total("bytecode_tracing"),
                  "backend": total("OutputGraph.call_user_compiler"),
                  "cxx": total("compile_file")}}))
"""


def _env(folder: Path) -> dict[str, str]:
    return dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(folder / "inductor"),
                PHYSODE_CACHE_DIR=str(folder / "physode"), OMP_NUM_THREADS="1")


def first_gradient(folder: Path) -> dict[str, float]:
    """One fresh process's first compiled three-body gradient and its compile split."""
    code = FIRST_GRADIENT.format(bench=str(ROOT / "benchmarks"))
    out = subprocess.run([sys.executable, "-c", code], env=_env(folder), check=True,
                         capture_output=True, text=True, timeout=900)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def demo(folder: Path) -> tuple[float, float]:
    """(the fit time ``physode demo`` prints, the command's wall time) in a fresh process,
    writing its outputs into ``folder``."""
    start = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).with_name("physode")), "demo",
                          "--out-dir", str(folder / "results")], env=_env(folder),
                         check=True, capture_output=True, text=True, timeout=900,
                         cwd=str(ROOT))
    wall = time.perf_counter() - start
    found = re.search(r"\) in ([0-9.]+) s", out.stdout)
    if found is None:
        raise RuntimeError(f"physode demo printed no fit time:\n{out.stdout[-2000:]}")
    return float(found.group(1)), wall


def main() -> None:
    import torch

    torch.set_num_threads(1)  # as in the children, for the machine line
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gradient"
        for label in ("cold", "warm"):
            r = first_gradient(folder)
            print(f"three-body, {label}: {r}", file=sys.stderr, flush=True)
            target = "<= 15 s" if label == "cold" else "<= 2 s"
            rows.append([f"three-body first gradient, {label} caches", f"{r['first']:.1f} s",
                         target, f"{r['tracing']:.1f}", f"{r['backend']:.1f}",
                         f"{r['cxx']:.1f}", f"{r['again'] * 1e3:.1f} ms"])
        folder = Path(tmp) / "demo"
        for label in ("cold", "warm"):
            fit_s, wall = demo(folder)
            print(f"demo, {label}: fit {fit_s} s, command {wall:.1f} s", file=sys.stderr,
                  flush=True)
            rows.append([f"`physode demo` fit, {label} caches (command {wall:.0f} s)",
                         f"{fit_s:.1f} s", "<= 20 s" if label == "cold" else "", "", "", "",
                         ""])
    header = ["fresh process", "time", "target", "dynamo tracing s",
              "backend s (inductor, incl. C++)", "C++ compiler s", "second gradient"]
    text = (f"Compilation in a fresh process ({machine_line()}); cold: empty inductor and "
            "physode caches, warm: the next process on the same caches.\n\n"
            + markdown_table(header, rows))
    print(text)
    write_result("compile_time", text)


if __name__ == "__main__":
    main()
