"""Methods declare their capabilities; tableaux validate themselves; the interpolant is one
class; step-size controllers are swappable objects (issue 11, engine part)."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import physode
from physode import InvalidArgument
from physode.ode.compile import CompiledMethod, compiled
from physode.ode.controller import PIController, StepSizeController
from physode.ode.methods import METHODS, get_method
from physode.ode.methods.base import Method
from physode.ode.methods.dense import PolyDense, powers
from physode.ode.methods.explicit import RK4, ExplicitRK
from physode.ode.methods.step import Step, time_tensor
from physode.ode.methods.tableau import Tableau, hermite_terms, nested_dense

ENGINE = Path(physode.__file__).parent / "ode"
CAPABILITIES = ("adaptive", "fsal", "stiff", "supports_adjoint", "linear_dense",
                "functional_step", "fused_vjp")


def oscillator(t, y):
    return torch.stack([y[1], -y[0] - 0.1 * y[1] + 0.2 * torch.sin(t)])


# --- declared capabilities -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_a_method_and_declares_its_capabilities(name):
    m = METHODS[name]
    assert isinstance(m, Method) and m.name == name and m.citation
    for cap in CAPABILITIES:
        assert isinstance(getattr(m, cap), bool), cap
    assert m.adaptive == (m.error_order is not None)
    assert m.nfe_per_step >= 0 and m.nfe_dense >= 0 and m.n_extended >= 1
    assert m.interpolant is not None and m.interpolant.n_vectors == m.n_extended
    assert not m.fused_vjp  # only a compiled wrapper fuses the rebuild and its VJP


def test_capabilities_are_what_the_families_are():
    assert {n for n, m in METHODS.items() if m.stiff} == {"rodas4", "rodas5p", "rosenbrock23"}
    assert {n for n, m in METHODS.items() if not m.supports_adjoint} == {
        "rodas4", "rodas5p", "rosenbrock23", "leapfrog", "yoshida4"}
    assert {n for n, m in METHODS.items() if m.functional_step} == {
        n for n, m in METHODS.items() if isinstance(m, ExplicitRK)}


def test_the_engine_never_probes_a_method_with_hasattr():
    """Capabilities are attributes of Method; ``getattr`` appears only where the user's
    vector field is read (its declarations, captured tensors)."""
    allowed = {"methods/step.py", "solve.py", "methods/symplectic.py"}
    for path in ENGINE.rglob("*.py"):
        rel = path.relative_to(ENGINE).as_posix()
        src = path.read_text()
        assert not re.search(r"\bhasattr\(", src), rel
        assert "__getattr__" not in src, rel
        if rel not in allowed:
            assert not re.search(r"\bgetattr\(", src), rel


def test_compiled_wrapper_forwards_every_capability_and_adds_the_fused_vjp():
    for name in ("dopri5", "rk4", "dopri8"):
        m = METHODS[name]
        c = compiled(m)
        assert isinstance(c, CompiledMethod) and isinstance(c, Method)
        for attr in (*CAPABILITIES[:-1], "name", "order", "error_order", "dense_order",
                     "pi_beta", "nfe_per_step", "nfe_dense", "n_extended", "citation"):
            assert getattr(c, attr) == getattr(m, attr), (name, attr)
        assert c.fused_vjp == (m.nfe_dense == 0)  # DOP853's extra dense stages: not fused
    # steps that are not functional (inner Jacobian, split declaration) run eagerly
    for name in ("rodas4", "rosenbrock23", "leapfrog"):
        assert compiled(METHODS[name]) is METHODS[name]


def test_get_method_refuses_non_names():
    assert get_method("rk4") is METHODS["rk4"]
    for bad in ("rk45", None, 3, ["dopri5"]):
        with pytest.raises(InvalidArgument, match="unknown method.*known methods"):
            get_method(bad)


class HandEuler(Method):
    """A minimal family written against the base class only: explicit Euler with an
    embedded zero-order estimate, and no declared dense output of its own kind."""

    name = "hand_euler"
    citation = "Euler (1768); Hairer, Nørsett & Wanner I, II.1."
    order = 1
    error_order = 0
    adaptive = True
    n_extended = 2
    interpolant = PolyDense(nested_dense([np.array([1.0, 0.0])]), by_h=True)  # y0 + θ h f0

    def step(self, func, t, h, y0, f0):
        y1 = y0 + h * f0
        return Step(y1, h * (func(time_tensor(t + h, y0), y1) - f0) / 2, None, [f0])

    def extended_stages(self, func, t, h, y0, ks, f1):
        return [ks[0], f1]


def test_a_new_family_runs_through_the_base_class_defaults(monkeypatch):
    """step_and_error, f1, dense_eval come from Method; ACA rebuilds the interpolant with
    autograd when the method does not declare a linear dense output."""
    monkeypatch.setitem(METHODS, "hand_euler", HandEuler())
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 9, dtype=torch.float64)

    def grads(gradient):
        ys = physode.odeint(oscillator, y0, t, method="hand_euler", rtol=1e-4, atol=1e-6,
                            gradient=gradient)
        return ys, torch.autograd.grad((ys * torch.cos(3 * t)[:, None]).sum(), y0)[0]

    ys_aca, g_aca = grads("aca")
    ys_direct, g_direct = grads("direct")
    assert torch.equal(ys_aca, ys_direct)
    assert torch.allclose(g_aca, g_direct, rtol=1e-10, atol=0)


# --- tableaux are validated data ----------------------------------------------------------------
def _euler_P(n_ext=2):
    return nested_dense(hermite_terms([1.0], n_ext, 1))


@pytest.mark.parametrize("kwargs, match", [
    ({"c": (0.0, 0.5), "a": ((0.0, 0.0), (0.4, 0.0)), "b": (0.0, 1.0)},
     r"row 1 of a sums to 0.4, but c\[1\] = 0.5"),
    ({"c": (0.0, 0.5), "a": ((0.0, 0.0), (0.5, 0.0)), "b": (0.2, 0.7)},
     "b must have 2 weights summing to 1"),
    ({"c": (0.0, 0.5), "a": ((0.0, 0.0), (0.5, 0.0)), "b": (0.0, 1.0),
      "e": (0.1, 0.0), "error_order": 1}, "embedded weights b - e"),
    ({"c": (0.0, 0.5), "a": ((0.0, 0.3), (0.5, 0.0)), "b": (0.0, 1.0)},
     "strictly lower triangular"),
    ({"c": (0.0, 0.5), "a": ((0.0, 0.0),), "b": (0.0, 1.0)}, "square"),
    ({"c": (0.0, 0.5), "a": ((0.0, 0.0), (0.5, 0.0)), "b": (0.0, 1.0),
      "e": (-0.5, 0.5)}, "error_order"),
    ({"c": (0.0, 0.5), "a": ((0.0, 0.0), (0.5, 0.0)), "b": (0.0, 1.0), "fsal": True},
     "fsal"),
])
def test_inconsistent_tableaux_are_refused_at_construction(kwargs, match):
    P = nested_dense(hermite_terms(kwargs["b"], 3, 2))
    with pytest.raises(InvalidArgument, match=rf"tableau 'bad': .*{match}"):
        Tableau(name="bad", order=1, P=P, **kwargs)


def test_dense_matrix_must_reproduce_b_and_fit_the_stage_list():
    c, a, b = (0.0, 0.5), ((0.0, 0.0), (0.5, 0.0)), (0.0, 1.0)
    Tableau(name="midpoint", c=c, a=a, b=b, order=2, P=nested_dense(hermite_terms(b, 3, 2)))
    with pytest.raises(InvalidArgument, match="P must have one row per extended stage"):
        Tableau(name="bad", c=c, a=a, b=b, order=2, P=nested_dense(hermite_terms(b, 4, 2)))
    with pytest.raises(InvalidArgument, match="does not reproduce b"):
        Tableau(name="bad", c=c, a=a, b=b, order=2,
                P=nested_dense(hermite_terms((1.0, 0.0), 3, 2)))


def test_registered_tableaux_are_data_without_stepping():
    assert RK4.stages == 4 and not hasattr(Tableau, "step")
    assert METHODS["rk4"].tableau is RK4


# --- the one interpolant ---------------------------------------------------------------------
@pytest.mark.parametrize("by_h", [True, False])
def test_poly_dense_cotangents_are_the_vjp_of_its_evaluation(by_h):
    torch.manual_seed(0)
    P = np.random.default_rng(0).normal(size=(4, 3))
    dense = PolyDense(P, by_h=by_h)
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    vs = [torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    thetas = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    out = dense.eval(0.3, y0, vs, thetas)
    assert out.shape == (3, 2, 3)
    G = torch.randn_like(out)
    want = torch.autograd.grad(out, [y0, *vs], G)
    g_y0, g_vs = dense.cotangents(0.3, thetas, G)
    assert torch.allclose(g_y0.view_as(y0), want[0], rtol=1e-14, atol=1e-14)
    for g, w in zip(g_vs, want[1:]):
        assert torch.allclose(g.view_as(w), w, rtol=1e-14, atol=1e-14)
    assert dense.matrix(torch.float64, y0.device) is dense.matrix(torch.float64, y0.device)


# --- step-size controllers ---------------------------------------------------------------------
def test_default_controller_is_the_pi_controller_bit_for_bit():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 10, 7, dtype=torch.float64)
    default = physode.solve(oscillator, y0, t)
    explicit = physode.solve(oscillator, y0, t, options={"controller": PIController()})
    assert torch.equal(default.ys, explicit.ys) and default.stats == explicit.stats
    by_option = physode.solve(oscillator, y0, t, options={"beta": 0.04, "safety": 0.8})
    by_object = physode.solve(oscillator, y0, t,
                              options={"controller": PIController(beta=0.04, safety=0.8)})
    assert torch.equal(by_option.ys, by_object.ys) and by_option.stats == by_object.stats
    assert by_option.stats != default.stats


def test_a_controller_object_configures_many_solves_without_keeping_state():
    ctrl = PIController(beta=0.04)
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 5, 3, dtype=torch.float64)
    first = physode.solve(oscillator, y0, t, options={"controller": ctrl})
    second = physode.solve(oscillator, y0, t, options={"controller": ctrl})
    assert first.stats == second.stats and ctrl.q == 0 and ctrl.prev_ratio == 1e-4


class Halving(StepSizeController):
    """Accept when the error is small enough; otherwise halve; never grow (a deliberately
    naive controller, to show the loop takes any controller object)."""

    def __init__(self):
        self.seen = 0

    def init(self, method):
        return Halving()

    def adapt(self, h, ratio):
        self.seen += 1
        return (True, h) if ratio <= 1.0 else (False, h / 2)


def test_a_custom_controller_drives_the_solve():
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 3, 4, dtype=torch.float64)
    sol = physode.solve(oscillator, y0, t, rtol=1e-8, atol=1e-10,
                        options={"controller": Halving(), "first_step": 0.5})
    ref = physode.solve(oscillator, y0, t, rtol=1e-10, atol=1e-12)
    assert torch.allclose(sol.ys, ref.ys, atol=1e-6)
    assert sol.stats.rejected >= 1
    with pytest.raises(InvalidArgument, match="give them to that controller"):
        physode.solve(oscillator, y0, t, options={"controller": Halving(), "beta": 0.04})


def test_pi_controller_refuses_bad_settings_by_name():
    for kwargs, match in (({"safety": 0.0}, "safety"), ({"ifactor": 0.5}, "ifactor"),
                          ({"dfactor": 1.5}, "dfactor"), ({"beta": -0.1}, "beta"),
                          ({"beta": math.inf}, "beta")):
        with pytest.raises(InvalidArgument, match=match):
            PIController(**kwargs)
    with pytest.raises(InvalidArgument, match="no error estimate"):
        PIController().init(METHODS["rk4"])


def test_dense_output_powers_equal_pow_to_an_ulp():
    """The running product that replaced ``theta ** exponents`` gives the same powers
    (zero, one, negative thetas of a backward solve, batched shapes)."""
    thetas = torch.tensor([[0.0, 1.0, 0.5, 0.999], [-0.25, 1e-8, 0.3, 0.75]],
                          dtype=torch.float64)
    for degree in (1, 4, 7):
        exps = torch.arange(1, degree + 1, dtype=torch.float64)
        got = powers(thetas, degree)
        assert got.shape == (2, 4, degree)
        torch.testing.assert_close(got, thetas[..., None] ** exps, rtol=4e-16 * degree,
                                   atol=0.0)
