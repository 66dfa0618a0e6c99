"""Fitting a stiff network: Robertson's rate constants with rodas4 (issue: stiff solvers)."""

import sys
from pathlib import Path

import pytest
import torch

import systems

ROOT = Path(__file__).resolve().parents[2]


def test_second_derivatives_of_mass_action_are_finite_at_zero_concentration():
    """Rosenbrock steps on forward sensitivities differentiate the field twice; at the
    Robertson start (B = C = 0) powers c**n gave 0 * inf = NaN there."""
    system = systems.get("robertson")
    y = torch.tensor([1.0, 0.0, 0.0])
    t = torch.tensor(0.0)
    hess = torch.autograd.functional.hessian(lambda y_: system(t, y_).sum(), y)
    assert torch.isfinite(hess).all()
    jac = torch.autograd.functional.jacobian(lambda y_: system(t, y_), y)
    assert torch.isfinite(jac).all()
    assert jac[1, 1].item() == pytest.approx(0.0)  # 2 k2 B + k3 C at B = C = 0


def test_robertson_rates_within_five_percent():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from robertson_rates import fit_robertson
    finally:
        sys.path.pop(0)
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        res, truth = fit_robertson(progress=False)
    finally:
        os.chdir(cwd)
    for label, value in zip(res.labels, res.values):
        assert abs(value / truth[label] - 1) < 0.05, (label, value)
    assert all(err > 0 for err in res.errors)
