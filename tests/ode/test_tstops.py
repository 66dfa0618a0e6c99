"""Known breakpoints (``options["tstops"]``): steps never straddle them, so the kinks and
jumps of an input cost no rejected steps; results agree with a tight reference."""

import pytest
import torch

import physode
from physode.errors import InvalidArgument

KNOTS = torch.linspace(0.0, 20.0, 21, dtype=torch.float64)
# a triangle wave: a kink at every knot
SAW = torch.tensor([0.0, 3.0] * 10 + [0.0], dtype=torch.float64)


@pytest.mark.parametrize("kind", ["linear", "constant"])
def test_tstops_remove_the_rejected_steps_at_kinks(kind):
    u = physode.Input(KNOTS, SAW, kind, name="feed")

    def field(t, y):
        return -y + u(t)

    t = torch.linspace(0.0, 20.0, 50)
    y0 = torch.tensor([0.0])
    plain = physode.solve(field, y0, t, rtol=1e-8, atol=1e-10)
    stops = physode.solve(field, y0, t, rtol=1e-8, atol=1e-10,
                          options={"tstops": u.breakpoints})
    ref = physode.solve(field, y0, t, rtol=1e-12, atol=1e-14,
                        options={"tstops": u.breakpoints})
    assert plain.stats.rejected >= 100  # measured 125 (linear), 429 (constant)
    assert stops.stats.rejected <= plain.stats.rejected // 20  # measured 0
    assert stops.stats.steps < plain.stats.steps
    assert (stops.ys - ref.ys).abs().max() < 1e-7
    assert (plain.ys - ref.ys).abs().max() > (stops.ys - ref.ys).abs().max()


def test_tstops_gradients_aca_equal_direct():
    values = torch.nn.Parameter(SAW[:6].clone())
    u = physode.Input(KNOTS[:6], values, "linear")
    k = torch.tensor(0.8, requires_grad=True)

    def field(t, y):
        return -k * y + u(t)

    grads = []
    for gradient in ("aca", "direct"):
        ys = physode.odeint(field, torch.tensor([0.5]), torch.linspace(0, 5, 7),
                            gradient=gradient, params=(k, values),
                            options={"tstops": u.breakpoints}, rtol=1e-10, atol=1e-12)
        grads.append(torch.autograd.grad(ys.square().sum(), [k, values]))
    for a, d in zip(*grads):
        assert torch.allclose(a, d, rtol=1e-10, atol=1e-14)


def test_a_tstop_on_an_output_time_and_at_the_ends():
    def field(t, y):
        return -y

    t = torch.tensor([0.0, 1.0, 2.0])
    ys = physode.odeint(field, torch.tensor([1.0]), t, options={"tstops": [0.0, 1.0, 2.0]},
                        rtol=1e-10, atol=1e-12)
    assert torch.allclose(ys[:, 0], torch.exp(-t), atol=1e-9)


@pytest.mark.parametrize("tstops, message", [
    ([1.0, float("nan")], r"option tstops: non-finite time nan at index 1"),
    ([5.0], r"option tstops: time 5.0 at index 0 lies outside the span \[0, 2\]"),
    (["a"], r"option tstops: .*real numbers"),
])
def test_bad_tstops_are_clear_errors(tstops, message):
    with pytest.raises(InvalidArgument, match=message):
        physode.odeint(lambda t, y: -y, torch.tensor([1.0]), torch.tensor([0.0, 2.0]),
                       options={"tstops": tstops})


def test_bad_max_events_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="option max_events must be an integer >= 1"):
        physode.odeint(lambda t, y: -y, torch.tensor([1.0]), torch.tensor([0.0, 2.0]),
                       options={"max_events": 0}, events=[])
