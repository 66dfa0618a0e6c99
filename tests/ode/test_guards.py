"""Careless arguments and degenerate problems fail fast with physode's own errors (issue 12).

Each case used to end in a raw IndexError/OverflowError/ZeroDivisionError/AttributeError,
or to spin for seconds to minutes before failing; each must now raise an
InvalidArgument or SolverError naming the argument, within a fraction of a second.
"""

import math
import time

import pytest
import torch

import physode
from physode import InvalidArgument, MaxStepsExceeded, SolverError
from physode.ode.controller import initial_step
from physode.ode.methods import METHODS

T = torch.linspace(0, 1, 5, dtype=torch.float64)
Y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)


def pendulum(t, y):
    return torch.stack([y[1], -torch.sin(y[0])])


@pytest.fixture
def fast():
    """Fail if the body takes more than 2 s: the point of these guards is failing fast."""
    start = time.perf_counter()
    yield
    assert time.perf_counter() - start < 2.0


# --- item 11: arguments ---------------------------------------------------------------------
@pytest.mark.parametrize("method, options, match", [
    ("rk4", {"step_size": math.inf}, "step_size"),
    ("rk4", {"step_size": math.nan}, "step_size"),
    ("rk4", {"step_size": "0.1"}, None),  # a numeric string is a number
    ("dopri5", {"first_step": math.inf}, "first_step"),
    ("dopri5", {"max_steps": math.inf}, "max_steps"),
    ("dopri5", {"max_steps": 2.5}, "max_steps"),
    ("dopri5", {"max_steps": True}, "max_steps"),
    ("dopri5", {"beta": 100}, "beta"),
    ("dopri8", {"beta": 0.2}, "beta"),  # exponent 1/8 - 0.15 < 0: a larger error grows h
    ("dopri5", {"safety": 2.0}, "safety"),
    ("dopri5", {"dfactor": 0.0}, "dfactor"),
    ("dopri5", {"ifactor": math.nan}, "ifactor"),
    ("dopri5", {"step_to_outputs": "yes"}, "step_to_outputs"),
    ("dopri5", {"controller": "pi"}, "controller"),
])
def test_bad_option_values_name_the_option(method, options, match, fast):
    if match is None:
        physode.odeint(pendulum, Y0, T, method=method, options=options)
        return
    with pytest.raises(InvalidArgument, match=match):
        physode.odeint(pendulum, Y0, T, method=method, options=options)


@pytest.mark.parametrize("options", [[("max_steps", 3)], "max_steps=3", 3])
def test_options_must_be_a_dict(options, fast):
    with pytest.raises(InvalidArgument, match="options must be a dict"):
        physode.odeint(pendulum, Y0, T, options=options)


@pytest.mark.parametrize("bad, match", [
    (lambda t, y: None, "NoneType"),
    (lambda t, y: y[:1], r"shape \(1,\)"),
    (lambda t, y: y.sum(), r"shape \(\)"),
    (lambda t, y: [1.0, 2.0], "list"),
])
@pytest.mark.parametrize("gradient", ["aca", "direct"])
def test_vector_field_of_the_wrong_kind_is_named(bad, match, gradient, fast):
    y0 = Y0.clone().requires_grad_(True)
    with pytest.raises(InvalidArgument, match=rf"func\(t, y\).*{match}"):
        physode.odeint(bad, y0, T, gradient=gradient)


@pytest.mark.parametrize("t", [["0", "1"], ("a", "b"), [0.0, "1"]])
def test_string_times_are_refused(t, fast):
    with pytest.raises(InvalidArgument, match="^t: .*real numbers"):
        physode.odeint(pendulum, Y0, t)


def test_meta_device_state_and_times_are_refused(fast):
    with pytest.raises(InvalidArgument, match="y0 is on the meta device"):
        physode.odeint(pendulum, torch.ones(2, device="meta"), T)
    with pytest.raises(InvalidArgument, match="meta device"):
        physode.odeint(pendulum, Y0, torch.linspace(0, 1, 3, device="meta"))


def test_not_callable_func_and_bad_params(fast):
    with pytest.raises(InvalidArgument, match="func must be callable"):
        physode.odeint("pendulum", Y0, T)
    k = torch.tensor(1.0, requires_grad=True)
    with pytest.raises(InvalidArgument, match="params must be a sequence"):
        physode.odeint(lambda t, y: -k * y, Y0, T, params=k)


def test_tolerance_below_the_dtype_resolution_is_refused(fast):
    with pytest.raises(InvalidArgument, match="atol"):
        physode.odeint(pendulum, Y0.float(), T, atol=1e-50)
    with pytest.raises(InvalidArgument, match="rtol"):
        physode.odeint(pendulum, Y0, T, rtol=math.inf)


def test_tiny_length_scale_is_a_solver_error_not_a_zero_division(fast):
    """length=1e-300 in a pendulum: f ~ 1e301 overflows the scaled norm of the starting
    step heuristic (a ZeroDivisionError in controller.py before)."""
    def very_short_pendulum(t, y):
        return torch.stack([y[1], -9.81 / 1e-300 * torch.sin(y[0])])

    with pytest.raises(SolverError):
        physode.odeint(very_short_pendulum, Y0, T, options={"max_steps": 50})


@pytest.mark.parametrize("scale", [1e-300, 1e300, 0.0])
def test_initial_step_survives_degenerate_scales(scale):
    """Derivatives that overflow the norm, a state that makes d0/d1 underflow, a zero field:
    always a finite positive step (never a division by zero or a NaN)."""
    def f(t, y):
        return y * (1.0 / scale if scale else 0.0)

    y0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    with torch.no_grad():
        h, nfe = initial_step(f, METHODS["dopri5"], 0.0, y0, f(torch.zeros(()), y0), 1.0,
                              1e-6, 1e-8, 10.0)
    assert nfe == 1 and 0 < h <= 10.0 and math.isfinite(h)


# --- item 12: non-finite steps, empty states, half precision -------------------------------
@pytest.mark.parametrize("gradient", ["aca", "direct"])
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_empty_state_returns_the_empty_state_at_every_time(method, gradient, fast):
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    y0 = torch.ones(0, 3, dtype=torch.float64, requires_grad=True)
    sol = physode.solve(f, y0, T, method=method, gradient=gradient,
                        options={"step_size": 0.1} if method == "rk4" else None)
    assert sol.ys.shape == (5, 0, 3) and sol.stats.nfe == 0 and not calls
    sol.ys.sum().backward()  # differentiable, trivially
    assert y0.grad is not None and y0.grad.shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_with_the_fix(dtype, fast):
    with pytest.raises(InvalidArgument, match=r"float32 or float64.*y0\.float\(\)"):
        physode.odeint(pendulum, Y0.to(dtype), T.to(dtype))


def test_nan_step_from_a_controller_stops_at_once(fast):
    """A step size that is NaN never underflows and never advances: raise at once."""
    class Broken(physode.ode.controller.StepSizeController):
        def adapt(self, h, ratio):
            return True, math.nan

    with pytest.raises(SolverError, match="h=nan"):
        physode.odeint(pendulum, Y0, T, options={"controller": Broken()})


def test_nan_field_fails_quickly_with_the_time(fast):
    """A field that turns NaN past t = 0.5: the non-finite error norm rejects and shrinks
    the step, and the solve stops near t = 0.5 (bounded work, no spinning)."""
    def f(t, y):
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    with pytest.raises(SolverError) as info:
        physode.solve(f, Y0, T)
    assert info.value.t == pytest.approx(0.5, abs=1e-6)


# --- item 13: the fixed-step grid is sized before it is built --------------------------------
def test_fixed_step_grid_longer_than_max_steps_fails_before_it_is_built(fast):
    with pytest.raises(MaxStepsExceeded, match=r"step size 1e-09 needs 1e\+09 steps"):
        physode.odeint(pendulum, Y0, T, method="rk4", options={"step_size": 1e-9})
    with pytest.raises(MaxStepsExceeded, match=r"\(10\)"):
        physode.odeint(pendulum, Y0, T, method="rk4",
                       options={"step_size": 0.01, "max_steps": 10})
    # a grid that fits is untouched
    ys = physode.odeint(pendulum, Y0, T, method="rk4",
                        options={"step_size": 0.01, "max_steps": 110})
    assert ys.shape == (5, 2)
