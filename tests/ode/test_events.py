"""Events: AtTime jumps and When crossings, against closed forms, with exact gradients.

Boluses on y' = -k y (values and gradients in k, the dose and the dose time), a falling
ball (impact time sqrt(2h/g) and its derivatives by the implicit function theorem), a
bouncing ball with restitution e (bounce times, d(position)/de against finite
differences), ACA = direct, and the clear errors for bad events.
"""

import math

import pytest
import torch

import physode
from physode.errors import InvalidArgument, SolverError
from physode.events import AtTime, EventRecord, When

TOL = {"rtol": 1e-11, "atol": 1e-13}


class Decay(torch.nn.Module):
    def __init__(self, k=0.7):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k))

    def forward(self, t, y):
        return -self.k * y


def _boluses(gradient, compile=False):
    field = Decay()
    dose = torch.tensor(0.5, requires_grad=True)
    events = [AtTime(1.0, lambda t, y: y + dose), AtTime(2.0, lambda t, y: y + dose)]
    sol = physode.solve(field, torch.tensor([1.0]), torch.tensor([0.0, 0.5, 1.0, 3.0]),
                        events=events, gradient=gradient, compile=compile, **TOL)
    y3 = sol.ys[-1, 0]
    gk, gd = torch.autograd.grad(y3, [field.k, dose])
    return sol, y3, gk, gd


def _bolus_closed_form():
    k, d = 0.7, 0.5
    y3 = math.exp(-3 * k) + d * math.exp(-2 * k) + d * math.exp(-k)
    dk = -3 * math.exp(-3 * k) - 2 * d * math.exp(-2 * k) - d * math.exp(-k)
    dd = math.exp(-2 * k) + math.exp(-k)
    return y3, dk, dd


@pytest.mark.parametrize("gradient", ["aca", "direct"])
def test_boluses_match_the_closed_form(gradient):
    sol, y3, gk, gd = _boluses(gradient)
    ref, dk, dd = _bolus_closed_form()
    assert abs(y3.item() - ref) < 1e-8
    assert abs(gk.item() - dk) < 1e-8
    assert abs(gd.item() - dd) < 1e-8
    # right-continuous: the output at t = 1 is the state just after the first bolus
    assert abs((sol.ys[2, 0]).item() - (math.exp(-0.7) + 0.5)) < 1e-9
    assert [(r.index, r.time.item()) for r in sol.events] == [(0, 1.0), (1, 2.0)]
    assert all(isinstance(r, EventRecord) for r in sol.events)


def test_boluses_aca_equals_direct():
    _, y_a, gk_a, gd_a = _boluses("aca")
    _, y_d, gk_d, gd_d = _boluses("direct")
    assert y_a.item() == y_d.item()
    assert abs((gk_a - gk_d).item()) <= 1e-10 * abs(gk_d.item())
    assert abs((gd_a - gd_d).item()) <= 1e-10 * abs(gd_d.item())


@pytest.mark.slow
def test_boluses_in_the_compiled_loop_equal_eager():
    _, y_e, gk_e, gd_e = _boluses("aca")
    _, y_c, gk_c, gd_c = _boluses("aca", compile=True)
    assert abs((y_c - y_e).item()) < 1e-12
    assert abs((gk_c - gk_e).item()) <= 1e-10 * abs(gk_e.item())
    assert abs((gd_c - gd_e).item()) <= 1e-10 * abs(gd_e.item())


@pytest.mark.parametrize("gradient", ["aca", "direct"])
def test_the_time_of_a_dose_gets_its_gradient(gradient):
    k, d = 0.7, 0.5
    tau = torch.tensor(1.2, requires_grad=True)
    dose = torch.tensor(d)
    field = Decay(k)
    sol = physode.solve(field, torch.tensor([1.0]), torch.tensor([0.0, 3.0]),
                        events=[AtTime(tau, lambda t, y: y + dose)], gradient=gradient, **TOL)
    (g_tau,) = torch.autograd.grad(sol.ys[-1, 0], tau)
    # y(3) = e^{-3k} + d e^{-k (3 - tau)}
    assert abs(g_tau.item() - d * k * math.exp(-k * (3 - 1.2))) < 1e-8
    assert sol.events[0].time.requires_grad


def test_backwards_in_time_with_a_bolus():
    k, d = 0.7, 0.5
    sol = physode.solve(Decay(k), torch.tensor([1.0]), torch.tensor([3.0, 0.0]),
                        events=[AtTime(1.5, lambda t, y: y + d)], **TOL)
    assert abs((sol.ys[-1, 0]).item() - (math.exp(1.5 * k) + d) * math.exp(1.5 * k)) < 1e-8


def _falling(gradient, g, h):
    def field(t, y):
        return torch.stack([y[1], -g * torch.ones_like(y[1])])

    y0 = torch.stack([h, torch.zeros_like(h)])
    ground = When(lambda t, y: y[0], terminal=True)
    return physode.solve(field, y0, torch.linspace(0.0, 1.0, 6), events=[ground],
                         gradient=gradient, params=(g,))


@pytest.mark.parametrize("gradient", ["aca", "direct"])
def test_a_falling_ball_hits_the_ground_at_the_closed_form_time(gradient):
    g = torch.tensor(9.81, requires_grad=True)
    h = torch.tensor(2.0, requires_grad=True)
    sol = _falling(gradient, g, h)
    (hit,) = sol.events
    impact = math.sqrt(2 * 2.0 / 9.81)
    assert hit.index == 0 and hit.terminal
    assert abs(hit.time.item() - impact) < 1e-8
    dg, dh = torch.autograd.grad(hit.time, [g, h], retain_graph=True)
    assert abs(dg.item() - (-impact / (2 * 9.81))) < 1e-8
    assert abs(dh.item() - impact / (2 * 2.0)) < 1e-8
    # outputs after the terminal event are NaN, those before are the free fall
    ts = sol.ts.tolist()
    for i, t in enumerate(ts):
        if t < impact:
            assert abs((sol.ys[i, 0]).item() - (2.0 - 9.81 * t * t / 2)) < 1e-9
        else:
            assert torch.isnan(sol.ys[i]).all()
    # the state at impact: height 0, velocity -g t*; its derivative in g by the IFT
    v = hit.y_after[1]
    assert abs(v.item() + 9.81 * impact) < 1e-8
    (dv,) = torch.autograd.grad(v, g)
    assert abs(dv.item() - (-impact - 9.81 * (-impact / (2 * 9.81)))) < 1e-8


def _bounce(e, gradient="aca", t_end=2.5, max_events=None):
    g = 9.81

    def field(t, y):
        return torch.stack([y[1], torch.full_like(y[1], -g)])

    bounce = When(lambda t, y: y[0], apply=lambda t, y: torch.stack([y[0], -e * y[1]]),
                  direction=-1)
    options = None if max_events is None else {"max_events": max_events}
    return physode.solve(field, torch.tensor([1.0, 0.0]), torch.linspace(0.0, t_end, 11),
                         events=[bounce], gradient=gradient, options=options, rtol=1e-10,
                         atol=1e-12)


def test_a_bouncing_ball_bounces_at_the_closed_form_times():
    e = 0.8
    sol = _bounce(torch.tensor(e))
    t1 = math.sqrt(2 / 9.81)
    v1 = 9.81 * t1
    # bounce n+1 follows bounce n after a flight of 2 e^n v1 / g
    expected = [t1 + 2 * sum(e**j for j in range(1, n + 1)) * v1 / 9.81 for n in range(4)]
    got = [r.time.item() for r in sol.events]
    assert len(got) == 4  # the fifth bounce would be at 2.58 > 2.5
    for a, b in zip(got, expected):
        assert abs(a - b) < 1e-8
    assert not any(r.terminal for r in sol.events)


def test_bouncing_ball_gradient_in_restitution():
    e = torch.tensor(0.8, requires_grad=True)
    sol_a = _bounce(e, "aca")
    (g_a,) = torch.autograd.grad(sol_a.ys[:, 0].sum(), e)
    sol_d = _bounce(e, "direct")
    (g_d,) = torch.autograd.grad(sol_d.ys[:, 0].sum(), e)
    assert abs((g_a - g_d).item()) <= 1e-10 * abs(g_d.item())
    step = 1e-6
    fd = (_bounce(torch.tensor(0.8 + step)).ys[:, 0].sum()
          - _bounce(torch.tensor(0.8 - step)).ys[:, 0].sum()) / (2 * step)
    assert abs(g_a.item() - fd.item()) < 1e-6 * abs(fd.item())


def test_zeno_accumulation_is_a_clear_error():
    with pytest.raises(SolverError, match="max_events=5.*Zeno"):
        _bounce(torch.tensor(0.5), t_end=10.0, max_events=5)


def test_direction_and_non_terminal_recording():
    def field(t, y):
        return torch.cos(t) * torch.ones_like(y)  # y = sin t

    t = torch.linspace(0.0, 13.5, 5)
    both = physode.solve(field, torch.tensor([0.0]), t,
                         events=[When(lambda t, y: y[0] - 0.5)], rtol=1e-10, atol=1e-12)
    rising = physode.solve(field, torch.tensor([0.0]), t,
                           events=[When(lambda t, y: y[0] - 0.5, direction=1)],
                           rtol=1e-10, atol=1e-12)
    crossings = [math.pi / 6, 5 * math.pi / 6, 2 * math.pi + math.pi / 6,
                 2 * math.pi + 5 * math.pi / 6, 4 * math.pi + math.pi / 6]
    assert [round(r.time.item(), 7) for r in both.events] == [round(c, 7) for c in crossings]
    assert [round(r.time.item(), 7) for r in rising.events] == \
        [round(c, 7) for c in crossings[::2]]
    # events without apply change nothing
    plain = physode.odeint(field, torch.tensor([0.0]), t, rtol=1e-10, atol=1e-12)
    assert torch.allclose(both.ys, plain, atol=1e-8)


def test_no_events_is_the_plain_solve():
    field = Decay()
    t = torch.linspace(0, 2, 5)
    a = physode.solve(field, torch.tensor([1.0]), t)
    b = physode.solve(field, torch.tensor([1.0]), t, events=[])
    assert torch.equal(a.ys, b.ys) and a.events == [] and b.events == []
    assert a.stats == b.stats


def test_bad_events_are_clear_errors():
    field = Decay()
    y0 = torch.tensor([1.0])
    t = torch.tensor([0.0, 3.0])
    with pytest.raises(InvalidArgument, match=r"events\[1\]: AtTime at t=5 lies outside the "
                                              r"span \[0, 3\]"):
        physode.solve(field, y0, t, events=[AtTime(1.0, lambda t, y: y), AtTime(5.0,
                                                                               lambda t, y: y)])
    with pytest.raises(InvalidArgument, match="apply must be callable"):
        AtTime(1.0, 2.0)
    with pytest.raises(InvalidArgument, match="time must be finite"):
        AtTime(float("nan"), lambda t, y: y)
    with pytest.raises(InvalidArgument, match="condition must be callable"):
        When(0.5)
    with pytest.raises(InvalidArgument, match="direction must be -1, 0 or"):
        When(lambda t, y: y[0], direction=2)
    with pytest.raises(InvalidArgument, match=r"events\[0\] is a str"):
        physode.solve(field, y0, t, events=["bolus"])
    with pytest.raises(InvalidArgument, match=r"events\[0\]: apply\(t, y\) returned shape"):
        physode.solve(field, y0, t, events=[AtTime(1.0, lambda t, y: torch.zeros(2))])
    with pytest.raises(InvalidArgument, match=r"events\[0\]: condition\(t, y\) must return a "
                                              "0-d tensor"):
        physode.solve(field, torch.tensor([1.0, 2.0]), t, events=[When(lambda t, y: y - 0.5)])
