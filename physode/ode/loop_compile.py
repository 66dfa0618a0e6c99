"""How every compiled solver loop is compiled: the options shared by
:mod:`physode.ode.compiled_loop`, :mod:`physode.ode.compiled_batch` and
:mod:`physode.ode.sensitivity_loop`.

- ``cpp_wrapper``: the ``while_loop`` itself runs in inductor's C++ wrapper, not in
  Python (~6 µs against ~19 µs per iteration on an adaptive RK4 loop, issue 13).
- ``while_loop`` marked cacheable: torch 2.13 leaves graphs with higher-order operators
  out of its FX-graph and AOTAutograd caches, so every new process lowered and scheduled
  the loops again (~10 s of the demo's fit with a warm cache). The cache key pickles the
  graph module with its submodules, so the loop's condition and body graphs (their code
  and constants) are part of the key; the torch version is too. This is the opt-in torch
  provides (``unsafe_marked_cacheable_functions``) for operators it has not audited.
- ``force_pointwise_cat`` for loops over one system: on CPU inductor lowers every
  ``cat``/``stack`` to a buffer whose inputs are written into slices, and in the C++
  wrapper every slice is a tensor object made and freed on each iteration (the six
  reaction rates of the cascade: six). As a pointwise kernel the concatenation fuses with
  its producers instead: the compiled cascade solve 23.9 -> 19.5 ms, the three-body
  gradient unchanged or slightly faster. Not for the per-sample loops over batches: there
  the pointwise form recomputes what it inlines for every row (64 three-body systems:
  76 -> 93 ms per gradient).
- ``cpp.vec_isa_ok`` from :mod:`physode.ode.vec_isa`: inductor's vector-ISA probe (six
  subprocesses, ~0.8 s in every process) answered once per machine.
- The small-block CPU cache (:mod:`physode.ode.allocator`) is put in place, because the
  loop body allocates its buffers again on every iteration.
"""

from __future__ import annotations

from typing import Any

import torch

from physode.ode import allocator
from physode.ode.vec_isa import isa_options

WHILE_LOOP = "torch.ops.higher_order.while_loop"


def loop_options(pointwise_cat: bool = True) -> dict[str, Any]:
    """The ``torch.compile`` options of a solver loop (and the allocator, enabled);
    ``pointwise_cat``: concatenations as pointwise kernels (loops over one system)."""
    allocator.enable()
    return {"cpp_wrapper": True, "force_pointwise_cat": pointwise_cat,
            "unsafe_marked_cacheable_functions": {WHILE_LOOP: torch.__version__},
            **isa_options()}


__all__ = ["WHILE_LOOP", "loop_options"]
