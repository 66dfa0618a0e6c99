"""ACA gives the gradient of the discrete solution: equal to direct backprop to round-off.

Zhuang et al., ICML 2020 (arXiv:2006.02493). Also: analytic gradients of y' = k y,
gradcheck, the continuous adjoint's drift, and checkpoint memory.
"""

import math

import pytest
import torch

import physode
from physode.ode.gradients.aca import aca_solve
from physode.ode.methods import METHODS
from physode.ode.methods.symplectic import SYMPLECTIC_METHODS

# symplectic methods need a position/velocity split (the problems below have none): their
# ACA == direct test is in tests/test_solvers_symplectic.py
GENERAL_METHODS = sorted(set(METHODS) - set(SYMPLECTIC_METHODS))

FIXED_STEP = 0.05


def _options(method):
    return None if METHODS[method].adaptive else {"step_size": FIXED_STEP}


def _linear():
    torch.manual_seed(1)
    A = (0.3 * torch.randn(3, 3) - 0.2 * torch.eye(3)).requires_grad_()
    y0 = torch.randn(3).requires_grad_()
    return (lambda t, y: y @ A.T), y0, (A,), 2.0


def _three_body():
    masses = torch.tensor([1.0, 1.05, 0.95], requires_grad=True)
    r1 = torch.tensor([0.97000436, -0.24308753])
    v3 = torch.tensor([-0.93240737, -0.86473146])
    y0 = torch.cat([r1, -r1, torch.zeros(2), -v3 / 2, -v3 / 2, v3]).requires_grad_()

    def gravity(t, y):
        pos = y[:6].reshape(3, 2)
        d = pos[None, :, :] - pos[:, None, :]
        r3 = (d.square().sum(-1) + torch.eye(3)) ** 1.5
        acc = (masses[None, :, None] * d / r3[..., None]).sum(1)
        return torch.cat([y[6:], acc.reshape(6)])

    return gravity, y0, (masses,), 1.0


class MLPField(torch.nn.Module):
    def __init__(self, n=4, width=16):
        super().__init__()
        torch.manual_seed(2)
        self.net = torch.nn.Sequential(torch.nn.Linear(n, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, n))

    def forward(self, t, y):
        return self.net(y) - 0.1 * y


def _mlp():
    f = MLPField().double()
    y0 = torch.randn(2, 4).requires_grad_()  # a batch of two states
    return f, y0, tuple(f.parameters()), 1.0


PROBLEMS = {"linear": _linear, "three_body": _three_body, "mlp": _mlp}


def _grads(problem, method, n_out, gradient, backwards=False):
    func, y0, params, T = PROBLEMS[problem]()
    t = torch.linspace(0.0, T, n_out)
    if backwards:
        t = t.flip(0)
    torch.manual_seed(3)
    # low-order pairs take thousands of steps at 1e-7; equality does not need that accuracy
    rtol = 1e-7 if METHODS[method].order > 2 else 1e-5
    ys = physode.odeint(func, y0, t, method=method, rtol=rtol, atol=rtol * 1e-2,
                        gradient=gradient, params=params, options=_options(method))
    w = torch.randn(ys.shape, dtype=ys.dtype)
    loss = (w * ys).sum() + 0.5 * ys.square().sum()
    return torch.autograd.grad(loss, (y0, *params))


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("n_out", [2, 17, 1000])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method", GENERAL_METHODS)
def test_aca_equals_direct(method, problem, n_out):
    if n_out == 1000 and not METHODS[method].adaptive and problem != "linear":
        pytest.skip("fixed-step methods step onto all 1000 outputs: covered by 'linear'")
    direct = _grads(problem, method, n_out, "direct")
    aca = _grads(problem, method, n_out, "aca")
    for g_d, g_a in zip(direct, aca):
        assert _rel(g_a, g_d) <= 1e-10


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_aca_equals_direct_backwards_in_time(method):
    direct = _grads("three_body", method, 17, "direct", backwards=True)
    aca = _grads("three_body", method, 17, "aca", backwards=True)
    for g_d, g_a in zip(direct, aca):
        assert _rel(g_a, g_d) <= 1e-10


def test_aca_matches_direct_in_float32():
    torch.set_default_dtype(torch.float32)
    direct = _grads("linear", "dopri5", 17, "direct")
    aca = _grads("linear", "dopri5", 17, "aca")
    for g_d, g_a in zip(direct, aca):
        assert g_a.dtype == torch.float32
        assert _rel(g_a, g_d) <= 1e-5


@pytest.mark.parametrize("gradient", ["aca", "adjoint", "direct"])
def test_exponential_growth_analytic_gradient(gradient):
    """y' = k y: dy(T)/dk = T y0 e^{kT}, dy(T)/dy0 = e^{kT}."""
    k = torch.tensor(0.8, requires_grad=True)
    y0 = torch.tensor([1.5], requires_grad=True)
    T = 2.0
    yT = physode.odeint(lambda t, y: k * y, y0, torch.tensor([0.0, T]), rtol=1e-10,
                        atol=1e-12, gradient=gradient, params=(k,))[-1, 0]
    gk, gy0 = torch.autograd.grad(yT, (k, y0))
    assert gk.item() == pytest.approx(T * 1.5 * math.exp(0.8 * T), rel=1e-8)
    assert gy0.item() == pytest.approx(math.exp(0.8 * T), rel=1e-8)


@pytest.mark.parametrize("method, opts", [
    ("rk4", {"step_size": 0.1}), ("dopri5", {"step_size": 0.25}),
    ("tsit5", {"step_size": 0.25, "step_to_outputs": False}),
])
def test_gradcheck_aca(method, opts):
    """On a fixed step grid the discrete solution is smooth in its inputs, so finite
    differences see exactly the gradient ACA computes (dense output included)."""
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], requires_grad=True)

    def f(y0, A_):
        return physode.odeint(lambda t, y: torch.tanh(y @ A_.T), y0,
                              torch.tensor([0.0, 0.3, 1.0]), method=method, params=(A_,),
                              options=opts)

    assert torch.autograd.gradcheck(f, (torch.tensor([0.3, -0.7], requires_grad=True), A))


def test_time_gradients_match_finite_differences():
    """dL/dt_k = <dL/dy(t_k), f(t_k, y(t_k))>, and t_0 moves every later output."""
    A = torch.tensor([[-0.3, 1.0], [-1.0, -0.1]])
    y0 = torch.tensor([1.0, 0.5])

    def loss(t):
        ys = physode.odeint(lambda s, y: y @ A.T + torch.sin(s), y0, t, rtol=1e-11,
                            atol=1e-12)
        return (ys ** 2).sum()

    t = torch.tensor([0.2, 0.7, 1.3, 2.0], requires_grad=True)
    (g_aca,) = torch.autograd.grad(loss(t), t)
    eps = 1e-6
    fd = torch.stack([(loss(t.detach() + eps * e) - loss(t.detach() - eps * e)) / (2 * eps)
                      for e in torch.eye(4)])
    assert torch.allclose(g_aca, fd, rtol=1e-6, atol=1e-8)
    ys = physode.odeint(lambda s, y: y @ A.T + torch.sin(s), y0, t, rtol=1e-11, atol=1e-12,
                        gradient="adjoint")
    (g_adj,) = torch.autograd.grad((ys ** 2).sum(), t)
    assert torch.allclose(g_adj, fd, rtol=1e-6, atol=1e-8)


def test_adjoint_agrees_with_direct_to_tolerance():
    direct = _grads("three_body", "dopri5", 17, "direct")
    adjoint = _grads("three_body", "dopri5", 17, "adjoint")
    for g_d, g_a in zip(direct, adjoint):
        assert _rel(g_a, g_d) < 1e-4


def test_adjoint_drifts_where_aca_does_not():
    """A stiffly damped linear system: integrating y backwards amplifies its error by
    e^{50 T}, so the continuous adjoint's gradient is far off at rtol 1e-6, while ACA's
    error is that of the forward discretisation — exactly direct backprop's."""
    A0 = torch.tensor([[-50.0, 0.0, 0.0], [1.0, -1.0, 0.5], [0.0, -0.5, -0.2]])

    def grad(gradient, rtol):
        A = A0.clone().requires_grad_()
        y0 = torch.tensor([1.0, 0.0, 1.0], requires_grad=True)
        ys = physode.odeint(lambda t, y: A @ y, y0, torch.linspace(0, 4, 9), rtol=rtol,
                            atol=rtol * 1e-2, gradient=gradient, params=(A,))
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(ys[-1].sum(), (A, y0))])

    ref = grad("direct", 1e-12)
    err = {g: _rel(grad(g, 1e-6), ref) for g in ("aca", "direct", "adjoint")}
    assert err["aca"] <= 1.01 * err["direct"]
    assert err["adjoint"] > 10 * err["aca"], err


def test_checkpoints_grow_with_steps_times_state():
    func, y0, params, _ = _linear()
    sizes = []
    for T in (2.0, 8.0):
        box: dict = {}
        from physode.ode.solve import make_config
        cfg = make_config("dopri5", 1e-8, 1e-10, None, y0)
        t = torch.tensor([0.0, T])
        ys, stats = aca_solve(func, y0, t, [0.0, T], cfg, params, box=box)
        record = box["record"]
        assert len(record) == stats.accepted  # one checkpoint per accepted step only
        assert stats.rejected == 0 or len(record) < stats.steps
        nbytes = sum(c.y.numel() * c.y.element_size() + c.f.numel() * c.f.element_size()
                     for c in record)
        assert nbytes == stats.accepted * 2 * y0.numel() * y0.element_size()
        # the output holds no per-step graph: its grad_fn is the ACA node itself
        assert type(ys.grad_fn).__name__ == "_ACABackward"
        sizes.append(len(record))
    assert sizes[1] > 2 * sizes[0]


def test_double_backward_is_refused_clearly():
    k = torch.tensor(0.5, requires_grad=True)
    ys = physode.odeint(lambda t, y: k * y, torch.ones(1), torch.tensor([0.0, 1.0]),
                        params=(k,))
    with pytest.raises(RuntimeError, match="double backward.*gradient='direct'"):
        torch.autograd.grad(ys.sum(), k, create_graph=True)


def test_warns_once_about_captured_tensor_missing_from_params():
    k = torch.tensor(0.5, requires_grad=True)

    def f(t, y):
        return -k * y

    with pytest.warns(UserWarning, match="not in params"):
        physode.odeint(f, torch.ones(1, requires_grad=True), torch.tensor([0.0, 1.0]))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        physode.odeint(f, torch.ones(1, requires_grad=True), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("method", ["leapfrog", "rodas4"])
def test_adjoint_refuses_methods_it_cannot_run(method):
    k = torch.tensor(0.5, requires_grad=True)
    with pytest.raises(physode.InvalidArgument, match="gradient='aca'"):
        physode.odeint(lambda t, y: -k * y, torch.ones(2), torch.tensor([0.0, 1.0]),
                       method=method, gradient="adjoint", params=(k,),
                       options={"step_size": 0.1} if method == "leapfrog" else None)
