"""Forward sensitivities: the state augmented with its Jacobian with respect to parameters.

For ``dy/dt = f(t, y; u)`` the sensitivities ``S_k = dy/du_k`` obey the variational
equations ``dS_k/dt = (df/dy) S_k + df/du_k`` with ``S_k(t0) = dy0/du_k`` (Hairer, Nørsett
& Wanner, *Solving ODEs I*, 2nd ed., sec. I.14). :class:`SensitivityField` is that
augmented vector field on the flat state ``z = [y, S_1, ..., S_P]``: one evaluation of
``f`` plus ``P`` Jacobian-vector products computed together with ``torch.func.jvp`` under
``torch.func.vmap``. Solved by an explicit Runge-Kutta method with the same step sequence,
the augmented solution's ``S`` is exactly the derivative of the discrete ``y`` (for RK
methods differentiation and discretisation commute, ibid. sec. II.6 and Hairer & Wanner
"internal numerical differentiation"), so Levenberg-Marquardt gets the exact Jacobian of
the residuals it evaluates in the same solve.

Why forward mode for the residual Jacobian: a fit has few parameters P and many
residuals M (9000 for the three-body data), so one forward solve carrying P tangents
beats M reverse (ACA) sweeps. Measured on the seed paper's three-body problem (P = 3,
1000 outputs, dopri5 rtol 1e-8, 2-core CPU, one thread): augmented solve 7 s eager and
0.13 s with the compiled step (after ~20 s compilation); forward-mode dual numbers through
the solver, 3 passes: 9.4 s; a Python loop of P ``jvp`` calls instead of ``vmap``: 25 s;
reverse mode would need 9000 ACA sweeps of ~1 s each.

Where an LM iteration's time goes (issue 19, SIR: 3 states, 2 rate constants, 3
experiments, dopri5 rtol 1e-8; ``benchmarks/lm_cost.py``): all of it is the augmented
solve — setting up the tangents is done once per fit and assembling the Jacobian is
< 1 % — and through ``vmap``/``jvp``/``functional_call`` the augmented field costs ~11x a
plain evaluation (370 against 32 us: per-operation dispatch overhead on a tiny state), an
augmented solve 10.7 plain solves. So the field is traced once per shape into a flat
graph of ATen operators (``torch.fx`` ``make_fx``, no compiler): 127 us per call, an
augmented solve 4.4 plain solves. ``jvp`` returns f itself with the tangents, so f is not
evaluated a second time (-10 to -15 %). With the compiled loop (``fit(..., compile=True)``,
:mod:`physode.ode.compiled_loop`) the augmented solve costs about one eager plain solve;
the numbers are in the benchmark's output and the README.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap
from torch.fx import GraphModule

#: Traced graphs kept per vector field module (one per input shape and tangent set);
#: beyond, the field runs untraced.
MAX_GRAPHS = 8

_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], GraphModule | None]] = \
    weakref.WeakKeyDictionary()
"""Traced graphs by the vector field they trace: the fields of a fit's experiment groups
share one system, so they share its graphs (a fit of 1000 experiments traces once)."""


class SensitivityField(nn.Module):
    """``z = [y, S]`` -> ``[f(t, y), J_y S + J_u]`` for the named parameters of ``system``.

    Args:
        system: the vector field (an ``nn.Module`` called as ``system(t, y)``).
        tangents: ``{parameter name in system.named_parameters(): (P, *shape)}``, the unit
            direction of each of the P sensitivity columns in that parameter (zeros where
            the column belongs to another parameter or to the initial state).
        n_directions: P.
    """

    function_transforms = True
    """Under ``torch.compile`` the field runs ``vmap(jvp)``: compiled loops must not write
    their checkpoints in place next to it (:func:`physode.ode.compiled_loop._forward_chunk`)."""

    def __init__(self, system: nn.Module, tangents: dict[str, Tensor], n_directions: int,
                 trace: bool = True):
        super().__init__()
        self.system = system
        self.names = tuple(tangents)
        self.tangents = tangents
        self.n_dir = int(n_directions)
        self.trace = trace
        # the tangents are constants of a traced graph: part of its key, by value
        self._tangent_key = tuple((k, tuple(v.shape), str(v.dtype),
                                   v.detach().cpu().numpy().tobytes())
                                  for k, v in tangents.items())

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``[f, J_y S + J_u]``. Eagerly, the field is traced once per input shape into a
        flat graph of ATen operators (``make_fx``), which runs ~3x faster than the
        ``vmap``/``jvp`` dispatch it records (SIR: 127 against 370 us per call). Every
        parameter and buffer of the module is an input of the graph, so the graph follows
        parameter updates; a field that reads tensor values into Python (a data-dependent
        branch) or that cannot be traced runs untraced. The graph is differentiable like
        any sequence of ATen operators, so the stiff methods' Jacobian of the augmented
        field goes through it too (cascade of issue 18, one residual+Jacobian evaluation
        with rodas4: 15.3 s through ``vmap``/``jvp``, 12.5 s traced). Under
        ``torch.compile`` and with ``trace=False``, the ``vmap``/``jvp`` form runs
        directly."""
        if not self.trace or torch.compiler.is_compiling():
            return self.augmented(t, z)
        key = (tuple(t.shape), tuple(z.shape), z.dtype, z.device, t.dtype, self.n_dir,
               self._tangent_key)
        inputs = self._state()
        graphs = self._graphs
        if key not in graphs:
            graphs[key] = (self._traced(t, z, inputs) if len(graphs) < MAX_GRAPHS else None)
        graph = graphs[key]
        if graph is None:
            return self.augmented(t, z)
        out: Tensor = graph(t, z, *inputs.values())
        return out

    @property
    def _graphs(self) -> dict[tuple[Any, ...], GraphModule | None]:
        """The traced graphs of this field's system (shared with other fields on it)."""
        graphs = _GRAPHS.get(self.system)
        if graphs is None:
            graphs = _GRAPHS[self.system] = {}
        return graphs

    def _state(self) -> dict[str, Tensor]:
        state: dict[str, Tensor] = dict(self.named_parameters())
        state.update(self.named_buffers())
        return state

    def _traced(self, t: Tensor, z: Tensor, state: dict[str, Tensor]) -> GraphModule | None:
        """The ATen graph of :meth:`augmented` at these shapes, checked against it once;
        None where tracing fails or the field branches on data."""
        from torch.fx.experimental.proxy_tensor import make_fx

        names = list(state)

        def run(t_: Tensor, z_: Tensor, *values: Tensor) -> Tensor:
            # forward() runs augmented() while tracing; make_fx raises where the field
            # reads a traced tensor's value into Python (``if y[0] > 0``, ``float(t)``),
            # which a graph would freeze
            out: Tensor = functional_call(self, dict(zip(names, values)), (t_, z_))
            return out

        values = [v.detach() for v in state.values()]
        try:
            self.trace = False
            with torch.enable_grad():  # make_fx cannot record forward AD under no_grad
                graph = make_fx(run, tracing_mode="real")(t.detach(), z.detach(), *values)
        except Exception:  # noqa: BLE001 - any failure means: run untraced
            return None
        finally:
            self.trace = True
        try:
            with torch.no_grad():
                ok = torch.allclose(graph(t, z, *values), self.augmented(t, z),
                                    rtol=1e-12, atol=0.0, equal_nan=True)
        except Exception:  # noqa: BLE001 - any failure means: run untraced
            return None
        return graph if ok else None

    def augmented(self, t: Tensor, z: Tensor) -> Tensor:
        """The augmented field by ``vmap`` over ``jvp`` (the reference form)."""
        n = z.shape[-1] // (1 + self.n_dir)
        batch = z.shape[:-1]
        y = z[..., :n]
        s = z[..., n:].reshape(*batch, self.n_dir, n)
        params = dict(self.system.named_parameters())
        ps: dict[str, Tensor] = {k: params[k] for k in self.names}

        def field(y_: Tensor, ps_: dict[str, Tensor]) -> Tensor:
            return functional_call(self.system, ps_, (t, y_))

        # jvp returns f(t, y) with the tangents; it does not depend on the mapped tangent,
        # so vmap hands it back unbatched (out_dims None) and f is not evaluated again.
        dims: Any = (None, -2)
        if not self.names:
            out = vmap(lambda s_: jvp(lambda y_: field(y_, ps), (y,), (s_,)),
                       in_dims=-2, out_dims=dims)(s)
        else:
            out = vmap(lambda s_, dp: jvp(field, (y, ps), (s_, dp)),
                       in_dims=(-2, 0), out_dims=dims)(s, self.tangents)
        fy, ds = out[0], out[1]
        return torch.cat([fy, ds.reshape(*batch, self.n_dir * n)], dim=-1)


__all__ = ["SensitivityField"]
