"""Rosenbrock methods on stiff problems (Robertson, Van der Pol mu = 1000,
Prothero-Robinson), their error estimates and Jacobians, and the stiffness hint that
explicit solvers give when they fail on a stiff problem."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import physode
from physode.ode.methods import METHODS
from physode.ode.methods.jacobian import linearize
from physode.ode.methods.rosenbrock import ROSENBROCK_METHODS
from physode.ode.methods.step import time_tensor

K1, K2, K3 = 0.04, 3e7, 1e4


def robertson(t, y):
    r1, r2, r3 = K1 * y[..., 0], K2 * y[..., 1] ** 2, K3 * y[..., 1] * y[..., 2]
    return torch.stack([-r1 + r3, r1 - r2 - r3, r2], -1)


def robertson_np(t, y):
    r1, r2, r3 = K1 * y[0], K2 * y[1] ** 2, K3 * y[1] * y[2]
    return [-r1 + r3, r1 - r2 - r3, r2]


def robertson_jac_np(t, y):
    return [[-K1, K3 * y[2], K3 * y[1]],
            [K1, -2 * K2 * y[1] - K3 * y[2], -K3 * y[1]],
            [0.0, 2 * K2 * y[1], 0.0]]


# outputs: t = 40 (the classical check point), log-spaced times through the dense output,
# and the end of the usual span
T_OUT = np.concatenate([[0.0, 40.0], np.logspace(-5, 10, 16), [4e10]])
T_OUT = np.unique(T_OUT)
AT_40 = (7.158271e-1, 9.185535e-6, 2.841637e-1)  # tight-tolerance reference values


@pytest.fixture(scope="module")
def robertson_reference():
    sol = solve_ivp(robertson_np, (0.0, 4e10), [1.0, 0.0, 0.0], method="Radau", rtol=1e-10,
                    atol=1e-16, jac=robertson_jac_np, t_eval=T_OUT)
    assert sol.success
    return sol.y.T


@pytest.fixture(scope="module", params=sorted(ROSENBROCK_METHODS))
def robertson_solution(request):
    method = request.param
    # module fixtures run before conftest's float64 default: say the dtype
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    sol = physode.solve(robertson, y0, torch.tensor(T_OUT), method=method, rtol=1e-6,
                        atol=1e-10)
    return method, sol


def test_robertson_at_40_to_four_significant_digits(robertson_solution):
    _, sol = robertson_solution
    y40 = sol.ys[list(T_OUT).index(40.0)].numpy()
    np.testing.assert_allclose(y40, AT_40, rtol=5e-5)


def test_robertson_agrees_with_radau_to_4e10(robertson_solution, robertson_reference):
    _, sol = robertson_solution
    ys = sol.ys.numpy()
    # y1 and y3 to the tolerance's accuracy; y2 (down to 1e-13) to atol's
    np.testing.assert_allclose(ys[:, [0, 2]], robertson_reference[:, [0, 2]], rtol=2e-4,
                               atol=1e-9)
    np.testing.assert_allclose(ys[:, 1], robertson_reference[:, 1], rtol=2e-3, atol=1e-10)
    # the end state itself, relative to its small components
    np.testing.assert_allclose(ys[-1, :2], robertson_reference[-1, :2], rtol=1e-2)


def test_robertson_conserves_mass_and_stays_nonnegative(robertson_solution):
    method, sol = robertson_solution
    ys = sol.ys.numpy()
    assert np.abs(ys.sum(1) - 1.0).max() <= 1e-8
    # rodas4: the issue's bound; ode23s' quadratic interpolant dips to -5e-11 (< atol) in
    # y3 at t = 1e-5
    assert ys.min() >= {"rodas4": -1e-12, "rodas5p": -1e-12, "rosenbrock23": -1e-10}[method]


def test_robertson_rodas4_takes_few_steps(robertson_solution):
    """Stiff solvers are not stability-bound: a few hundred steps over 4e10 time units
    (an explicit method needs ~1e10; benchmarks/stiff_symplectic.py compares Radau)."""
    method, sol = robertson_solution
    assert sol.stats.accepted < {"rodas4": 500, "rodas5p": 500, "rosenbrock23": 2000}[method]


# ------------------------------------------------------------------ Van der Pol
MU = 1000.0
VDP_T = np.array([0.0, 1.0, 100.0, 500.0, 700.0, 1200.0, 2000.0, 2500.0, 3000.0])


def vdp(t, y):
    return torch.stack([y[..., 1], MU * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)


@pytest.mark.parametrize("method, rtol, tol", [("rodas4", 1e-8, 2e-6), ("rodas5p", 1e-8, 2e-6),
                                               ("rosenbrock23", 1e-6, 2e-3)])
def test_van_der_pol_mu_1000(method, rtol, tol):
    def rhs(t, y):
        return [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]]

    ref = solve_ivp(rhs, (0, 3000), [2.0, 0.0], method="Radau", rtol=1e-10, atol=1e-10,
                    t_eval=VDP_T).y.T
    sol = physode.solve(vdp, torch.tensor([2.0, 0.0]), torch.tensor(VDP_T), method=method,
                        rtol=rtol, atol=rtol)
    ys = sol.ys.numpy()
    assert np.abs(ys[:, 0] - ref[:, 0]).max() < tol
    assert np.abs(ys[:, 1] - ref[:, 1]).max() < tol * np.abs(ref[:, 1]).max()
    assert sol.stats.accepted < 10_000


# ------------------------------------------------------------------ non-autonomous, stiff
@pytest.mark.parametrize("method, rtol, acc, max_steps", [("rodas4", 1e-6, 1e-6, 400),
                                                           ("rodas5p", 1e-6, 1e-6, 400),
                                                           ("rosenbrock23", 1e-4, 3e-5, 1000)])
def test_prothero_robinson_uses_df_dt(method, rtol, acc, max_steps):
    """y' = -1e4 (y - cos t) - sin t, y(0) = 1: exact solution cos t. Steps far beyond the
    explicit stability limit (dopri5 needs ~30000 here) are only accurate when the stages
    include the h gamma_i df/dt term. Outputs are step ends: in this stiff regime RODAS's
    interpolant is much less accurate than its steps (Steinebach's Rodas4P/5P fix that)."""
    def f(t, y):
        return -1e4 * (y - torch.cos(t)) - torch.sin(t)

    t = torch.linspace(0.0, 10.0, 6)
    sol = physode.solve(f, torch.tensor([1.0]), t, method=method, rtol=rtol, atol=rtol * 1e-3,
                        options={"step_to_outputs": True})
    assert torch.allclose(sol.ys[:, 0], torch.cos(t), rtol=0, atol=acc)
    assert sol.stats.accepted < max_steps


# ------------------------------------------------------------------ error estimate, dense
@pytest.mark.parametrize("method", sorted(ROSENBROCK_METHODS))
def test_embedded_error_estimate_has_its_order(method):
    """The local error estimate of one step scales like h^(error_order + 1)."""
    m = METHODS[method]

    def f(t, y):
        return torch.stack([y[1], -torch.sin(y[0]) + 0.3 * torch.cos(t)])

    y0 = torch.tensor([1.0, 0.0])
    f0 = f(time_tensor(0.0, y0), y0)
    hs = [0.1, 0.05, 0.025]
    errs = [m.step(f, 0.0, h, y0, f0).err.abs().max().item() for h in hs]
    p = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(p - (m.error_order + 1)) <= 0.3, (p, errs)


@pytest.mark.parametrize("method", sorted(ROSENBROCK_METHODS))
def test_dense_output_is_continuous(method):
    """The interpolant reproduces y0 at theta = 0 and y1 at theta = 1."""
    m = METHODS[method]
    y0 = torch.tensor([1.0, 0.0, 0.0])
    f0 = robertson(time_tensor(0.0, y0), y0)
    step = m.step(robertson, 0.0, 1e-3, y0, f0)
    f1 = m.f1(robertson, 1e-3, step)
    f1 = robertson(time_tensor(1e-3, y0), step.y1) if f1 is None else f1
    ext = m.extended_stages(robertson, 0.0, 1e-3, y0, step.ks, f1)
    ends = m.dense_eval(1e-3, y0, ext, torch.tensor([0.0, 1.0]))
    assert torch.allclose(ends[0], y0, rtol=0, atol=1e-16)
    assert torch.allclose(ends[1], step.y1, rtol=1e-14, atol=1e-18)


# ------------------------------------------------------------------ Jacobians
def test_supplied_jacobian_is_used_and_agrees():
    calls = []

    class Robertson(torch.nn.Module):
        autonomous = True

        def forward(self, t, y):
            return robertson(t, y)

        def jacobian(self, t, y):
            calls.append(1)
            return torch.tensor(robertson_jac_np(0.0, y.tolist()), dtype=y.dtype)

    t = torch.tensor([0.0, 1.0, 100.0])
    a = physode.solve(Robertson(), torch.tensor([1.0, 0.0, 0.0]), t, method="rodas4")
    b = physode.solve(robertson, torch.tensor([1.0, 0.0, 0.0]), t, method="rodas4")
    assert len(calls) == a.stats.steps
    assert torch.allclose(a.ys, b.ys, rtol=1e-12, atol=1e-15)


def test_autograd_jacobian_and_time_derivative():
    A = torch.tensor([[-2.0, 1.0], [0.5, -3.0]])

    def f(t, y):
        return y @ A.T + torch.sin(3 * t) * y ** 2

    y = torch.tensor([0.4, -1.2])
    lin = linearize(f, 0.7, y)
    expected = A + np.sin(2.1) * torch.diag(2 * y)
    assert torch.allclose(lin.J[0], expected, atol=1e-14)
    assert torch.allclose(lin.ft, 3 * np.cos(2.1) * y ** 2, atol=1e-14)
    assert linearize(lambda t, y: y @ A.T, 0.7, y).ft is None  # autonomous: no df/dt


def test_system_batch_rows_get_block_jacobians():
    """A physode.System evolves batch rows independently: one n x n block per row."""
    systems = pytest.importorskip("systems")
    system = systems.get("robertson")
    y0 = system.y0.detach()
    batch = torch.stack([y0, y0 * torch.tensor([0.9, 1.0, 1.0]) + torch.tensor([0, 0, 0.1])])
    lin = linearize(system, 0.0, batch)
    assert lin.rows and lin.J.shape == (2, 3, 3)
    for i in range(2):
        assert torch.allclose(lin.J[i], linearize(system, 0.0, batch[i]).J[0], atol=1e-12)
    t = torch.tensor([0.0, 1.0, 40.0])
    with torch.no_grad():
        ys = physode.odeint(system, batch, t, method="rodas4", rtol=1e-8, atol=1e-12)
        one = physode.odeint(system, batch[1], t, method="rodas4", rtol=1e-8, atol=1e-12)
    assert torch.allclose(ys[:, 1], one, rtol=1e-6, atol=1e-12)
    assert torch.allclose(ys[-1, 0], torch.tensor(AT_40), rtol=5e-5)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("method", sorted(ROSENBROCK_METHODS))
def test_aca_equals_direct_on_robertson_log_rates(method):
    """The fit target of issue 7: gradients w.r.t. log rate constants of a stiff network,
    through the Jacobians and linear solves, ACA == direct to round-off."""
    def grads(gradient):
        logk = torch.log(torch.tensor([K1, K2, K3])).requires_grad_()

        def f(t, y):
            k = logk.exp()
            r1, r2, r3 = k[0] * y[..., 0], k[1] * y[..., 1] ** 2, k[2] * y[..., 1] * y[..., 2]
            return torch.stack([-r1 + r3, r1 - r2 - r3, r2], -1)

        y0 = torch.tensor([1.0, 0.0, 0.0], requires_grad=True)
        t = torch.tensor([0.0, 1e-3, 0.1, 1.0, 10.0, 40.0])
        ys = physode.odeint(f, y0, t, method=method, rtol=1e-6, atol=1e-10,
                            gradient=gradient, params=(logk,),
                            options={"step_to_outputs": False})
        w = torch.tensor([1.0, 1e4, 1.0])  # weight y2 like a scaled observable
        return torch.autograd.grad((ys * w).square().sum(), (y0, logk))

    for g_d, g_a in zip(grads("direct"), grads("aca")):
        assert ((g_a - g_d).abs().max() / g_d.abs().max()).item() <= 1e-10


def test_gradcheck_rodas4_fixed_steps():
    def f(y0, A):
        return physode.odeint(lambda t, y: torch.tanh(y @ A.T) - 5.0 * y, y0,
                              torch.tensor([0.0, 0.3, 1.0]), method="rodas4", params=(A,),
                              options={"step_size": 0.25, "step_to_outputs": False})

    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], requires_grad=True)
    assert torch.autograd.gradcheck(f, (torch.tensor([0.3, -0.7], requires_grad=True), A))


# ------------------------------------------------------------------ stiffness hint
def test_explicit_method_on_stiff_problem_names_the_stiff_solvers():
    with pytest.raises(physode.MaxStepsExceeded) as err:
        physode.odeint(robertson, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1e3]),
                       method="dopri5", options={"max_steps": 2000})
    msg = str(err.value)
    assert "looks stiff" in msg
    for name in ROSENBROCK_METHODS:
        assert f"method='{name}'" in msg


def test_step_size_underflow_on_a_stiff_problem_says_so():
    def f(t, y):
        return -1e20 * (y - torch.cos(t))

    with pytest.raises(physode.StepSizeUnderflow, match="looks stiff.*rodas4"):
        physode.odeint(f, torch.tensor([1.0]), torch.tensor([1e4, 1e4 + 1.0]))


def test_non_stiff_failure_has_no_stiffness_hint():
    def oscillator(t, y):
        return torch.stack([y[1], -y[0]])

    with pytest.raises(physode.MaxStepsExceeded) as err:
        physode.odeint(oscillator, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1e4]),
                       options={"max_steps": 200})
    assert "stiff" not in str(err.value)
    with pytest.raises(physode.StepSizeUnderflow) as err:  # blow-up at t = 1, not stiffness
        physode.odeint(lambda t, y: y ** 2, torch.tensor([1.0]), torch.tensor([0.0, 2.0]))
    assert "looks stiff" not in str(err.value)
