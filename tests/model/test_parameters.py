"""physode.Parameter transforms and the System parameter / state machinery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physode.errors import InvalidSystem
from physode.model.parameter import Parameter
from physode.model.system import StateVar, System

F64 = torch.float64

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
moderate_u = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False)
any_u = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False)


@st.composite
def declarations(draw):
    """A random Parameter declaration of every transform kind, with a value inside."""
    kind = draw(
        st.sampled_from(
            ["identity", "positive", "log", "logistic", "log-logistic", "lower", "upper"]
        )
    )
    if kind == "identity":
        return Parameter(draw(finite))
    if kind in ("positive", "log"):
        v = draw(st.floats(min_value=1e-8, max_value=1e8))
        return Parameter(v, positive=kind == "positive", scale="log" if kind == "log" else "linear")
    lo = draw(st.floats(min_value=-1e3, max_value=1e3))
    width = draw(st.floats(min_value=1e-2, max_value=1e4))
    if kind == "log-logistic":
        lo = abs(lo) + 1e-3
    hi = lo + width
    frac = draw(st.floats(min_value=0.01, max_value=0.99))
    v = lo + frac * (hi - lo)
    if kind == "logistic":
        return Parameter(v, bounds=(lo, hi))
    if kind == "log-logistic":
        v = math.exp(math.log(lo) + frac * (math.log(hi) - math.log(lo)))
        return Parameter(v, bounds=(lo, hi), scale="log")
    if kind == "lower":
        return Parameter(lo + width, bounds=(lo, math.inf))
    return Parameter(hi - width, bounds=(-math.inf, hi))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(declarations())
def test_transform_round_trip(spec):
    x = spec.value
    u = spec.to_unconstrained(x)
    assert torch.isfinite(u).all()
    back = spec.to_physical(u)
    assert torch.allclose(
        back, x, rtol=1e-9, atol=1e-12 * max(1.0, abs(spec.lower), abs(spec.upper))
    )


@settings(max_examples=300, deadline=None, derandomize=True)
@given(declarations(), moderate_u)
def test_moderate_unconstrained_values_map_strictly_inside(spec, u):
    x = spec.to_physical(torch.tensor(u, dtype=F64))
    assert torch.isfinite(x)
    assert spec.lower < x.item() < spec.upper


@settings(max_examples=300, deadline=None, derandomize=True)
@given(declarations(), any_u)
def test_every_unconstrained_value_maps_inside_closed_domain(spec, u):
    """Any finite u lands in the closed domain (the boundary only by floating-point
    saturation of exp/sigmoid at extreme u); positive stays >= 0 and never NaN."""
    with torch.no_grad():
        x = spec.to_physical(torch.tensor(u, dtype=F64)).item()
    assert not math.isnan(x)
    assert spec.lower <= x <= spec.upper
    if spec.positive and -700 < u < 700:
        assert x > 0


def test_transform_kinds_are_the_documented_maps():
    u = torch.tensor([-2.0, 0.0, 3.0], dtype=F64)
    assert torch.allclose(Parameter([1.0, 1.0, 1.0], positive=True).to_physical(u), torch.exp(u))
    b = Parameter([0.5, 0.5, 0.5], bounds=(-1.0, 3.0))
    assert torch.allclose(b.to_physical(u), -1.0 + 4.0 / (1.0 + torch.exp(-u)))
    ll = Parameter([1.0, 1.0, 1.0], bounds=(1e-3, 1e3), scale="log")
    assert torch.allclose(torch.log10(ll.to_physical(u)), -3.0 + 6.0 / (1.0 + torch.exp(-u)))
    assert Parameter(2.0).transform == "identity"
    assert Parameter(2.0, bounds=(1.0, math.inf)).transform == "lower"
    assert Parameter(2.0, bounds=(-math.inf, 3.0)).transform == "upper"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(value=-0.1, positive=True), "non-positive"),
        (dict(value=0.0, scale="log"), "non-positive"),
        (dict(value=5.0, bounds=(0.0, 1.0)), "exclude the value 5.0"),
        (dict(value=1.0, bounds=(0.0, 1.0)), "strictly inside"),
        (dict(value=1.0, bounds=(2.0, 1.0)), "lo < hi"),
        (dict(value=float("nan")), "finite"),
        (dict(value=1.0, scale="logarithmic"), "scale"),
        (dict(value=1.0, positive=True, bounds=(-2.0, -1.0)), "empty domain"),
    ],
)
def test_bad_declarations_raise(kwargs, match):
    value = kwargs.pop("value")
    with pytest.raises(InvalidSystem, match=match):
        Parameter(value, **kwargs)


# ---------------------------------------------------------------------- a toy system
class Toy(System):
    """dx/dt = -k x + b, dv/dt = a * v (v a vector); only for these tests."""

    k = Parameter(2.0, positive=True, units="1/s", description="decay rate")
    b = Parameter(0.5, bounds=(-1.0, 1.0))
    a = Parameter([0.1, -0.2, 0.3])
    c = Parameter(7.0, fixed=True)
    state_vars = (
        StateVar("x", units="m"),
        StateVar("v", (3,), ("axis",), {"axis": ("x", "y", "z")}, "m/s"),
        StateVar("M", (2, 2), ("row", "col")),
    )

    def vector_field(self, t, s):
        return {"x": -self.k * s["x"] + self.b, "v": self.a * s["v"], "M": -s["M"] * self.c}


def test_params_read_back_physical_values_and_storage_is_unconstrained():
    toy = Toy()
    assert set(toy.params) == {"k", "b", "a", "c"}
    assert toy.k.item() == pytest.approx(2.0) and toy.params["b"].item() == pytest.approx(0.5)
    names = {n for n, _ in toy.named_parameters()}
    assert names == {"_raw.k", "_raw.b", "_raw.a"}
    assert dict(toy.named_buffers())["_fixed.c"].item() == 7.0
    assert toy._raw["k"].item() == pytest.approx(math.log(2.0))
    assert Toy.k.units == "1/s"  # the class attribute is the declaration
    specs = toy.parameter_specs()
    assert specs["k"].positive and specs["b"].bounds == (-1.0, 1.0) and specs["c"].fixed
    assert specs["k"].description == "decay rate"


def test_set_params_in_place_validated_and_free_vector_round_trip():
    toy = Toy()
    raw_k = toy._raw["k"]
    toy.set_params(k=3.0, a=[1.0, 2.0, 3.0], c=8.0)
    assert toy._raw["k"] is raw_k  # optimisers keep their tensors
    assert toy.k.item() == pytest.approx(3.0) and toy.c.item() == 8.0
    assert toy.a.tolist() == pytest.approx([1.0, 2.0, 3.0])
    toy.k = 4.0  # descriptor assignment goes through set_params
    assert toy.k.item() == pytest.approx(4.0)
    with pytest.raises(InvalidSystem, match="'k' is positive"):
        toy.set_params(k=-1.0)
    with pytest.raises(InvalidSystem, match="'b': bounds"):
        toy.set_params(b=2.0)
    with pytest.raises(InvalidSystem, match="no parameter 'q'.*'k', 'b', 'a', 'c'"):
        toy.set_params(q=1.0)
    with pytest.raises(InvalidSystem, match="shape"):
        toy.set_params(a=[1.0, 2.0])

    assert toy.free_names() == ["k", "b", "a"]
    assert toy.free_labels() == ["k", "b", "a[0]", "a[1]", "a[2]"]
    v = toy.free_vector().detach().clone()
    assert v.shape == (5,)
    assert v[0].item() == pytest.approx(math.log(4.0))
    rng = np.random.default_rng(0)
    w = torch.tensor(rng.normal(size=5) * 5, dtype=F64)
    toy.set_free_vector(w)
    assert torch.equal(toy.free_vector().detach(), w)
    assert toy.k.item() == pytest.approx(math.exp(w[0].item()))
    assert -1.0 < toy.b.item() < 1.0
    toy.set_free_vector(v)
    assert toy.k.item() == pytest.approx(4.0)
    with pytest.raises(InvalidSystem, match="length 4"):
        toy.set_free_vector(torch.zeros(4, dtype=F64))


def test_gradients_flow_to_the_free_vector():
    toy = Toy()
    y = torch.arange(1.0, 1.0 + toy.state_size, dtype=F64)
    dy = toy(torch.tensor(0.0, dtype=F64), y)
    dy.sum().backward()
    # d/du of (-k x) with k = exp(u): -k x = -2 * 1
    assert toy._raw["k"].grad.item() == pytest.approx(-2.0)
    assert toy._raw["a"].grad.tolist() == pytest.approx([2.0, 3.0, 4.0])


def test_fix_and_unfix_move_parameters_between_free_and_fixed():
    toy = Toy()
    toy.set_params(k=3.0)
    toy.fix("k")
    assert toy.free_names() == ["b", "a"] and toy.parameter_specs()["k"].fixed
    assert toy.k.item() == pytest.approx(3.0)
    toy.unfix("k", "c")
    assert toy.free_names() == ["k", "b", "a", "c"]
    assert toy.c.item() == pytest.approx(7.0)
    toy.configure(k=Parameter(5.0, bounds=(1.0, 10.0)))
    assert toy.parameter_specs()["k"].transform == "logistic"
    assert toy.k.item() == pytest.approx(5.0)


def test_pack_unpack_and_batched_forward():
    toy = Toy()
    n = toy.state_size
    assert n == 1 + 3 + 4
    y = torch.randn(5, 4, n, dtype=F64)
    s = toy.unpack(y)
    assert s["x"].shape == (5, 4) and s["v"].shape == (5, 4, 3) and s["M"].shape == (5, 4, 2, 2)
    assert torch.equal(toy.pack(s), y)
    assert torch.equal(s["M"][2, 1], y[2, 1, 4:].reshape(2, 2))
    dy = toy(torch.tensor(0.3, dtype=F64), y)
    looped = torch.stack(
        [
            torch.stack([toy(torch.tensor(0.3, dtype=F64), y[i, j]) for j in range(4)])
            for i in range(5)
        ]
    )
    assert torch.equal(dy, looped)
    assert toy.state_slice("v") == slice(1, 4)
    with pytest.raises(InvalidSystem, match="state size 8"):
        toy(torch.tensor(0.0), torch.zeros(3, 7, dtype=F64))


def test_vector_field_must_return_every_variable():
    class Bad(Toy):
        def vector_field(self, t, s):
            return {"x": s["x"], "extra": s["x"]}

    with pytest.raises(InvalidSystem, match=r"missing \['v', 'M'\].*unknown \['extra'\]"):
        Bad()(torch.tensor(0.0), torch.zeros(8, dtype=F64))


def test_initial_state_known_and_unknown():
    toy = Toy()
    assert toy.y0 is None
    toy.set_initial_state({"x": 1.0, "v": [1.0, 2.0, 3.0], "M": [[1.0, 0.0], [0.0, 1.0]]})
    assert toy.y0.tolist() == [1.0, 1.0, 2.0, 3.0, 1.0, 0.0, 0.0, 1.0]
    assert toy.y0.dtype == F64 and toy.unknown_initial_state == ()
    toy.set_initial_state(unknown=["v"])
    assert toy.free_names() == ["k", "b", "a", "y0.v"]
    assert toy.free_labels()[-3:] == ["y0.v[0]", "y0.v[1]", "y0.v[2]"]
    assert len(toy.free_vector()) == 5 + 3
    # the unknown part is a parameter: gradients reach it through y0
    toy.y0.sum().backward()
    assert toy._y0_free["v"].grad.tolist() == [1.0, 1.0, 1.0]
    toy.set_initial_state({"x": 2.0})  # partial update keeps the rest and the unknowns
    assert toy.y0[0].item() == 2.0 and toy.y0[1:4].tolist() == [1.0, 2.0, 3.0]
    assert toy.unknown_initial_state == ("v",)
    toy.configure(unknown_initial_state=False)
    assert toy.free_names() == ["k", "b", "a"]
    with pytest.raises(InvalidSystem, match="unknown state variable"):
        toy.set_initial_state({"w": 1.0})
    with pytest.raises(InvalidSystem, match="does not match the state size 8"):
        toy.y0 = [1.0, 2.0]
    with pytest.raises(InvalidSystem, match="no state variable 'q'"):
        toy.set_initial_state(unknown=["q"])


def test_configure_rejects_unknown_settings_and_bad_t_span():
    toy = Toy()
    with pytest.raises(InvalidSystem, match="no parameter or setting \\['kk'\\]"):
        toy.configure(kk=1.0)
    with pytest.raises(InvalidSystem, match="t_span"):
        toy.configure(t_span=(1.0, 1.0))
    toy.configure(t_span=[0, 2])
    assert toy.t_span == (0.0, 2.0)


def test_state_declaration_errors():
    with pytest.raises(InvalidSystem, match="2 dimension names"):
        StateVar("p", (3,), ("a", "b"))
    with pytest.raises(InvalidSystem, match="2 coordinates for dimension 'a' of size 3"):
        StateVar("p", (3,), ("a",), {"a": (1, 2)})
    with pytest.raises(InvalidSystem, match="identifier"):
        StateVar("not a name")

    class Twice(System):
        state_vars = (StateVar("x"), StateVar("x"))

    with pytest.raises(InvalidSystem, match="declared twice"):
        _ = Twice().state_size

    class Clash(System):
        state_vars = (StateVar("x"),)

    with pytest.raises(InvalidSystem, match="clashes"):
        Clash().add_parameter("forward", 1.0)


def test_float64_even_when_default_dtype_is_float32():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        toy = Toy()
        toy.set_initial_state(torch.zeros(8, dtype=torch.float64).tolist())
        assert toy.k.dtype == F64 and toy.c.dtype == F64 and toy.y0.dtype == F64
        assert toy(torch.tensor(0.0), toy.y0).dtype == F64
    finally:
        torch.set_default_dtype(old)


def test_float32_state_works_after_to():
    toy = Toy().to(torch.float32)
    y = torch.ones(2, 8, dtype=torch.float32)
    assert toy(torch.tensor(0.0), y).dtype == torch.float32


def test_public_initial_state_parameters_and_layout_parsing():
    """The estimator reads unknown initial states through a public method (issue 11)."""
    from physode.model.state import Layout

    class Two(System):
        state_vars = (StateVar("x"), StateVar("v", shape=(2,), dims=("axis",)))

        def vector_field(self, t, s):
            return {"x": s["v"].sum(-1), "v": -s["v"]}

    s = Two()
    s.set_initial_state({"x": 1.0, "v": [2.0, 3.0]}, unknown=["v"])
    params = s.initial_state_parameters()
    assert list(params) == ["v"] and params["v"] is s.free_parameters()[-1]
    assert params["v"].tolist() == [2.0, 3.0]
    layout = Layout(Two.state_vars)
    flat = layout.initial_from({"v": [5.0, 6.0]}, torch.tensor([1.0, 2.0, 3.0]), "Two")
    assert flat.tolist() == [1.0, 5.0, 6.0]
    with pytest.raises(InvalidSystem, match="Two"):
        layout.initial_from([1.0, 2.0], None, "Two")
