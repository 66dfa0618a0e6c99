"""The log posterior density that :func:`physode.sample` draws from, in whitened
coordinates, with its gradient from physode's ACA gradients.

Likelihood: Gaussian with the fit's weighted residuals, ``-log L = chi2 / 2`` when sigma is
known; with one shared noise level estimated, sigma is integrated out under Jeffreys' prior
``p(sigma) ~ 1/sigma``, which leaves ``-log L = (N/2) ln chi2`` (Gelman et al., *Bayesian
Data Analysis*, 3rd ed., 2013, sec. 3.2 and 14.2).

Priors: a parameter declared with ``prior=`` (:mod:`physode.model.priors`) contributes its
log-density through the fit's residuals (``FitProblem`` appends the prior residuals, so
``0.5 sum r^2`` is the negative log posterior up to a constant); every other parameter gets
a flat prior on its declared scale within its bounds: flat in x for ``scale="linear"``,
flat in ln x for ``scale="log"`` (unknown initial states: flat in x). A prior is a density
of x, ln x or log10 x (its ``scale``), and a flat prior one of x or ln x. The sampler moves
in the fitting coordinates u (unconstrained, so bounds hold by construction), so the
log-Jacobian of the map from u to that variable, ``log |dx/du|`` or ``log |d ln x/du|``,
is added (Stan Reference Manual, "Constraint transforms", change of variables).

Whitening: ``u = u_hat + L z`` with ``L L^T`` the Gauss-Newton covariance of u at the
estimate (eigenvalues floored so a non-identifiable direction keeps a finite width), so the
posterior in z is close to a standard normal and NUTS needs little adaptation (Betancourt,
"A Conceptual Introduction to Hamiltonian Monte Carlo", arXiv:1701.02434, sec. 4.2).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from physode.errors import SolverError
from physode.estimate.problem import FitProblem
from physode.model.system import System

#: Eigenvalues of the covariance below this fraction of the largest are raised to it.
EIG_FLOOR = 1e-10


def whitening(J: np.ndarray, chi2: float, problem: FitProblem) -> np.ndarray:
    """``L`` with ``L L^T`` = the Gauss-Newton covariance of the unconstrained vector,
    from the weighted-residual Jacobian ``J`` (scaled by the residual variance when sigma
    is estimated)."""
    A = J.T @ J
    lam, V = np.linalg.eigh(A)
    lam = np.maximum(lam, EIG_FLOOR * max(float(lam.max(initial=0.0)), 1e-300))
    scale = 1.0
    if problem.sigma_estimated:
        scale = chi2 / max(problem.n_data - problem.n_params, 1)
    return np.asarray(V / np.sqrt(lam) * math.sqrt(scale))


class LogPrior:
    """``log p(u)``: priors (or flat on the declared scale) plus the transform's
    log-Jacobian, for the free physical vector of ``system`` (module docstring)."""

    def __init__(self, system: System) -> None:
        specs = system.parameter_specs()
        self.parts: list[tuple[int, int, Any, Any]] = []
        offset = 0
        for name, p in zip(system.free_names(), system.free_parameters()):
            n = p.numel()
            if not name.startswith("y0."):
                spec = specs[name]
                self.parts.append((offset, offset + n, spec, spec.prior))
            offset += n
        self.size = offset

    def __call__(self, u: Tensor) -> Tensor:
        """Differentiable log density of ``u`` (1-D, the free physical vector) from the
        flat priors and every log-Jacobian; declared priors' densities are in the
        residuals and not counted here."""
        total = u.new_zeros(())
        for lo, hi, spec, prior in self.parts:
            v = u[lo:hi]
            log_jac = _log_abs_derivative(spec.transform, v, spec.lower, spec.upper)
            on_log = (spec.scale == "log") if prior is None else (
                getattr(prior, "scale", "linear") in ("log", "log10"))
            if on_log:
                log_jac = log_jac - torch.log(spec.to_physical(v))
            total = total + log_jac.sum()
        return total

    def describe(self, system: System) -> str:
        """Which prior each parameter has, for the InferenceData's attributes."""
        out = []
        for (_, _, spec, prior), name in zip(self.parts, [n for n in system.free_names()
                                                          if not n.startswith("y0.")]):
            if prior is not None:
                out.append(f"{name}: {prior!r}")
            else:
                scale = "ln " + name if spec.scale == "log" else name
                out.append(f"{name}: flat in {scale} on ({spec.lower:g}, {spec.upper:g})")
        return "; ".join(out)


def _log_abs_derivative(kind: str, u: Tensor, lo: float, hi: float) -> Tensor:
    """``log |dx/du|`` of :meth:`physode.Parameter.to_physical`, element-wise."""
    if kind == "identity":
        return torch.zeros_like(u)
    if kind in ("exp", "lower", "upper"):
        return u
    log_sig = torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u)
    if kind == "logistic":
        return math.log(hi - lo) + log_sig
    # log-logistic: x = exp(a + (b - a) s(u)): dx/du = x (b - a) s (1 - s)
    a, b = math.log(lo), math.log(hi)
    return a + (b - a) * torch.sigmoid(u) + math.log(b - a) + log_sig


def _point(z: np.ndarray) -> bytes:
    """A whitened point as a dictionary key: its float64 bytes (NUTS hands back exactly
    the points it evaluated)."""
    return np.asarray(z, dtype=np.float64).tobytes()


class Potential:
    """``U(z) = -log posterior`` at ``u = center + L z`` and its gradient in z; a solve that
    fails gives ``U = inf``."""

    def __init__(self, problem: FitProblem, center: np.ndarray, L: np.ndarray) -> None:
        self.problem = problem
        self.center = np.asarray(center, dtype=np.float64)
        self.L = np.asarray(L, dtype=np.float64)
        self.log_prior = LogPrior(problem.system)
        self.n_grad = 0
        self.n_eval = 0
        self._seen: dict[bytes, float] = {}  # U at the points value_and_grad evaluated

    def u_of(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.center + self.L @ np.asarray(z, dtype=np.float64))

    def _prior(self, u: np.ndarray, grad: bool) -> tuple[float, np.ndarray]:
        ut = torch.as_tensor(u, dtype=torch.float64).requires_grad_(grad)
        with torch.enable_grad() if grad else torch.no_grad():
            lp = self.log_prior(ut)
            g = (torch.autograd.grad(lp, ut)[0].numpy() if grad and lp.requires_grad
                 else np.zeros_like(u))
        return float(lp.detach()), g

    def value(self, z: np.ndarray) -> float:
        """U(z) without gradient (emcee)."""
        u = self.u_of(z)
        self.n_eval += 1
        lp, _ = self._prior(u, False)
        if not math.isfinite(lp):
            return math.inf
        self.problem.set_vector(u)
        try:
            chi2 = self.problem.chi2(self.problem.residuals().r)
        except SolverError:
            return math.inf
        return self._neg_log_lik(chi2) - lp

    def known_value(self, z: np.ndarray) -> float:
        """U(z), from :meth:`value_and_grad`'s record when it evaluated exactly this point
        (a NUTS draw is one of its trajectory's points), else by :meth:`value`."""
        key = _point(z)
        return self._seen[key] if key in self._seen else self.value(z)

    def value_and_grad(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        """U(z) and dU/dz (the data term's gradient by the fit's gradient mode, ACA by
        default)."""
        U, g = self._value_and_grad(z)
        if len(self._seen) >= 100_000:  # bounded: a long chain's draws are mostly recent
            self._seen.clear()
        self._seen[_point(z)] = U
        return U, g

    def _value_and_grad(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        u = self.u_of(z)
        self.n_grad += 1
        lp, glp = self._prior(u, True)
        if not math.isfinite(lp):
            return math.inf, np.zeros_like(u)
        self.problem.set_vector(u)
        try:
            # autograd.Function.forward (how NUTS calls this) runs with grad mode off
            with torch.enable_grad():
                loss, g, _ = self.problem.loss_and_grad()
        except SolverError:
            return math.inf, np.zeros_like(u)
        n = self.problem.n_data
        chi2 = 2.0 * n * loss
        dchi2 = 2.0 * n * g.cpu().numpy()
        if self.problem.sigma_estimated:
            dnll = 0.5 * n / max(chi2, 1e-300) * dchi2
        else:
            dnll = 0.5 * dchi2
        U = self._neg_log_lik(chi2) - lp
        if not (math.isfinite(U) and np.all(np.isfinite(dnll))):
            return math.inf, np.zeros_like(u)
        return U, self.L.T @ (dnll - glp)

    def _neg_log_lik(self, chi2: float) -> float:
        if not math.isfinite(chi2):
            return math.inf
        if self.problem.sigma_estimated:
            return 0.5 * self.problem.n_data * math.log(max(chi2, 1e-300))
        return 0.5 * chi2


class _PotentialFn(torch.autograd.Function):
    """U(z) as a torch scalar whose backward is the precomputed ACA gradient."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, potential: Potential) -> Tensor:
        U, g = potential.value_and_grad(z.detach().cpu().numpy().astype(np.float64))
        ctx.save_for_backward(torch.as_tensor(g, dtype=z.dtype, device=z.device))
        return torch.as_tensor(U, dtype=z.dtype, device=z.device)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (g,) = ctx.saved_tensors
        return grad_out * g, None


def torch_potential(potential: Potential) -> Any:
    """``potential_fn({"z": tensor}) -> U`` for :class:`pyro.infer.mcmc.NUTS`."""

    def potential_fn(params: dict[str, Tensor]) -> Tensor:
        out: Tensor = _PotentialFn.apply(params["z"], potential)
        return out

    return potential_fn


__all__ = ["EIG_FLOOR", "LogPrior", "Potential", "torch_potential", "whitening"]
