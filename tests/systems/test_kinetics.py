"""Reaction networks: parsing, stoichiometry, mass action against hand-written ODEs, moieties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import systems
from physode.errors import InvalidSystem, ReactionParseError
from systems.kinetics import ReactionNetwork
from systems.reactions import left_null_space, parse_reaction

F64 = torch.float64
T0 = torch.tensor(0.0, dtype=F64)


# ---------------------------------------------------------------------- parsing
def test_parse_forms():
    (r,) = parse_reaction("A + B -> C")
    assert r.reactants == (("A", 1), ("B", 1)) and r.products == (("C", 1),) and r.label is None
    (r,) = parse_reaction("2 B -> B + C")
    assert r.reactants == (("B", 2),) and r.order == 2
    (r,) = parse_reaction("3X+Y2->2Y2")
    assert r.reactants == (("X", 3), ("Y2", 1)) and r.products == (("Y2", 2),)
    f, b = parse_reaction("A <=> B")
    assert (f.reactants, f.products, b.reactants, b.products) == (
        (("A", 1),),
        (("B", 1),),
        (("B", 1),),
        (("A", 1),),
    )
    (r,) = parse_reaction("X -> ")
    assert r.products == ()
    (r,) = parse_reaction("-> X")
    assert r.reactants == () and r.order == 0
    (r,) = parse_reaction("X -> 0")
    assert r.products == ()
    (r,) = parse_reaction("k_deg: X -> ∅")
    assert r.label == "k_deg"
    f, b = parse_reaction("kon, koff: A + B <=> AB")
    assert (f.label, b.label) == ("kon", "koff")
    f, b = parse_reaction("K: A <=> B")
    assert (f.label, b.label) == ("K_f", "K_r")
    (r,) = parse_reaction("A + A -> B")
    assert r.reactants == (("A", 2),)


@pytest.mark.parametrize(
    "text, position, reason",
    [
        ("A + -> B", 4, "expected a species name"),
        ("A -> B + ", 9, "expected a species name"),
        ("A => B", 2, "unexpected character '='"),
        ("A B -> C", 2, "unexpected character 'B'"),
        ("A -> B -> C", 7, "one arrow"),
        ("A + B", 5, "expected '->' or '<=>'"),
        ("2.5 A -> B", 0, "positive integer"),
        ("0 A -> B", 0, "positive integer"),
        ("A * B -> C", 2, "unexpected character '*'"),
        ("->", 0, "needs reactants or products"),
        (": A -> B", 0, "expected a rate label"),
        ("k1: : A -> B", 4, "expected a species name"),
        ("k1, k2: A -> B", 0, "one label for '->'"),
    ],
)
def test_parse_errors_show_the_position(text, position, reason):
    with pytest.raises(ReactionParseError) as info:
        parse_reaction(text)
    err = info.value
    assert err.position == position, str(err)
    assert reason in str(err)
    assert f"at position {position}" in str(err)
    caret_line = str(err).splitlines()[-1]
    assert caret_line.index("^") == 2 + position
    assert isinstance(err, ValueError) and isinstance(err, InvalidSystem)


def test_network_errors_name_the_culprit():
    with pytest.raises(
        InvalidSystem, match="unknown species 'X' in reaction 'A \\+ X -> C'; known species"
    ):
        ReactionNetwork(["A + X -> C"], [1.0], species=["A", "C"])
    with pytest.raises(
        InvalidSystem, match="rate constant 'k2' of reaction '2 B -> B \\+ C' is positive, got -1"
    ):
        ReactionNetwork(["A -> B", "2 B -> B + C"], [1.0, -1.0])
    with pytest.raises(InvalidSystem, match="positive, got 0"):
        ReactionNetwork(["A -> B"], {"k1": 0})
    with pytest.raises(InvalidSystem, match=r"missing \['k2'\]"):
        ReactionNetwork(["A -> B", "B -> C"], {"k1": 1.0})
    with pytest.raises(InvalidSystem, match=r"unknown \['kx'\]"):
        ReactionNetwork(["A -> B"], {"k1": 1.0, "kx": 2.0})
    with pytest.raises(InvalidSystem, match="1 rates given for 2 reactions"):
        ReactionNetwork(["A <=> B"], [1.0])
    with pytest.raises(InvalidSystem, match="more than one reaction"):
        ReactionNetwork(["k: A -> B", "k: B -> A"], [1.0, 2.0])
    with pytest.raises(InvalidSystem, match="unknown species"):
        ReactionNetwork(["A -> B"], [1.0], y0={"Q": 1.0})
    with pytest.raises(ReactionParseError, match="position 4"):
        ReactionNetwork(["A + -> B"], [1.0])
    with pytest.raises(InvalidSystem, match="'k1' is positive"):
        systems.get("robertson", k1=-0.04)


# ---------------------------------------------------------------------- structure
def test_species_order_stoichiometry_and_rates():
    net = ReactionNetwork(
        ["A + B -> C", "2 B -> B + C", "A <=> B", "C -> "], [1.0, 2.0, 3.0, 4.0, 5.0]
    )
    assert net.species == ("A", "B", "C")
    assert net.rate_names == ("k1", "k2", "k3", "k4", "k5")
    expected = [[-1, 0, -1, 1, 0], [-1, -1, 1, -1, 0], [1, 1, 0, 0, -1]]
    assert net.stoichiometry.tolist() == expected
    specs = net.parameter_specs()
    assert all(specs[k].positive and specs[k].scale == "log" for k in net.rate_names)
    assert net.state_vars[0].dims == ("species",) and net.state_vars[0].coords["species"] == (
        "A",
        "B",
        "C",
    )
    assert net.free_vector().detach().tolist() == pytest.approx(np.log([1, 2, 3, 4, 5]).tolist())


def test_rate_units_follow_reaction_order():
    net = ReactionNetwork(
        ["-> A", "A -> B", "2 A -> C"], [1.0, 1.0, 1.0], concentration_units="mol/L", time_units="s"
    )
    u = {k: s.units for k, s in net.parameter_specs().items()}
    assert u == {"k1": "mol/L/s", "k2": "1/s", "k3": "(mol/L)^-1/s"}


def numpy_mass_action(c, reactions, species, k):
    """Independent mass action: loop over reactions, multiply concentrations."""
    dc = np.zeros_like(c)
    idx = {s: i for i, s in enumerate(species)}
    for kj, r in zip(k, reactions):
        rate = kj
        for s, coef in r.reactants:
            rate = rate * c[idx[s]] ** coef
        for s, coef in r.reactants:
            dc[idx[s]] -= coef * rate
        for s, coef in r.products:
            dc[idx[s]] += coef * rate
    return dc


def test_random_network_matches_numpy_and_batches():
    rng = np.random.default_rng(4)
    texts = [
        "A + B -> C",
        "2 B -> B + C",
        "A <=> B",
        "C -> ",
        "-> A",
        "3 D + A -> 2 C",
        "C + D <=> 2 A",
    ]
    k = rng.uniform(0.1, 3.0, 9)
    net = ReactionNetwork(texts, k.tolist())
    for _ in range(5):
        c = rng.uniform(0.0, 2.0, len(net.species))
        dc = net(T0, torch.tensor(c)).detach().numpy()
        np.testing.assert_allclose(
            dc, numpy_mass_action(c, net.reactions, net.species, k), rtol=1e-13, atol=1e-13
        )
    y = torch.tensor(rng.uniform(0.0, 2.0, (3, 5, len(net.species))))
    looped = torch.stack([torch.stack([net(T0, y[i, j]) for j in range(5)]) for i in range(3)])
    torch.testing.assert_close(net(T0, y), looped, rtol=1e-14, atol=1e-14)


def test_robertson_equals_the_hand_written_equations():
    """Hairer & Wanner II, sec. IV.1: y1' = -0.04 y1 + 1e4 y2 y3,
    y2' = 0.04 y1 - 1e4 y2 y3 - 3e7 y2^2, y3' = 3e7 y2^2."""
    rob = systems.get("robertson")
    assert rob.species == ("A", "B", "C") and rob.y0.tolist() == [1.0, 0.0, 0.0]
    rng = np.random.default_rng(5)
    y = rng.uniform(0.0, 1.0, (50, 3)) * np.array([1.0, 1e-4, 1.0])
    dy = rob(T0, torch.tensor(y)).detach().numpy()
    y1, y2, y3 = y.T
    ref = np.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], axis=-1
    )
    np.testing.assert_allclose(dy, ref, rtol=1e-12, atol=1e-15)
    assert rob.moiety_names() == ["A + B + C"]


def test_michaelis_menten_and_lotka_volterra_equal_hand_written_equations():
    mm = systems.get("michaelis-menten")
    assert mm.species == ("S", "E", "SE", "P") and mm.y0.tolist() == [50.0, 10.0, 0.0, 0.0]
    assert mm.t_span == (0.0, 200.0)
    rng = np.random.default_rng(6)
    c = rng.uniform(0, 50, (20, 4))
    S, E, SE, P = c.T
    kf, kr, kcat = 0.01, 0.1, 0.1
    ref = np.stack(
        [
            -kf * S * E + kr * SE,
            -kf * S * E + (kr + kcat) * SE,
            kf * S * E - (kr + kcat) * SE,
            kcat * SE,
        ],
        axis=-1,
    )
    np.testing.assert_allclose(mm(T0, torch.tensor(c)).detach().numpy(), ref, rtol=1e-13)

    lv = systems.get("lotka-volterra")
    assert lv.y0.tolist() == [1.0, 1.0] and lv.t_span == (0.0, 10.0)
    assert {k: v.item() for k, v in lv.params.items()} == pytest.approx(
        {"alpha": 1.5, "beta": 1.0, "gamma": 3.0}
    )
    u = rng.uniform(0.1, 5, (20, 2))
    x, y = u.T
    ref = np.stack([1.5 * x - 1.0 * x * y, -3.0 * y + 1.0 * x * y], axis=-1)
    np.testing.assert_allclose(lv(T0, torch.tensor(u)).detach().numpy(), ref, rtol=1e-13)


def test_initial_concentrations_by_species_name():
    mm = systems.get("michaelis-menten", y0={"S": 40.0})
    assert mm.y0.tolist() == [40.0, 10.0, 0.0, 0.0]
    net = ReactionNetwork(["A -> B", "B -> C"], [1.0, 2.0], y0={"B": 3.0})
    assert net.y0.tolist() == [0.0, 3.0, 0.0]
    net.set_initial_state({"C": 1.0}, unknown=True)
    assert net.y0.tolist() == [0.0, 3.0, 1.0] and net.free_names()[-1] == "y0.concentration"
    with pytest.raises(InvalidSystem, match="unknown species \\['Q'\\]"):
        net.set_initial_state({"Q": 1.0})


# ---------------------------------------------------------------------- moieties
@pytest.mark.parametrize("name", ["robertson", "michaelis-menten", "lotka-volterra"])
def test_moieties_span_the_left_null_space(name):
    net = systems.get(name)
    N = net.stoichiometry.numpy()
    W = np.array(net.moieties, dtype=float).reshape(-1, N.shape[0])
    ref = scipy.linalg.null_space(N.T)  # orthonormal basis of {w : w^T N = 0}
    assert W.shape[0] == ref.shape[1]
    if W.shape[0]:
        np.testing.assert_array_equal(W @ N, 0)
        assert np.linalg.matrix_rank(np.hstack([W.T, ref])) == W.shape[0]


def test_michaelis_menten_moieties_are_the_textbook_ones():
    mm = systems.get("michaelis-menten")
    assert sorted(mm.moiety_names()) == ["E + SE", "S + SE + P"]
    inv = mm.invariants(mm.y0)
    assert inv["E + SE"].item() == 10.0 and inv["S + SE + P"].item() == 50.0


def test_left_null_space_on_random_integer_matrices():
    rng = np.random.default_rng(7)
    for _ in range(30):
        s, r = rng.integers(1, 7), rng.integers(1, 7)
        N = rng.integers(-2, 3, (s, r))
        N[:, rng.integers(0, r)] = 0 if rng.random() < 0.3 else N[:, 0]
        W = np.array(left_null_space(N.tolist()), dtype=float).reshape(-1, s)
        ref = scipy.linalg.null_space(N.T.astype(float))
        assert W.shape[0] == ref.shape[1]
        if W.shape[0]:
            np.testing.assert_array_equal(W @ N, 0)
            assert np.linalg.matrix_rank(W) == W.shape[0]


@pytest.mark.parametrize("name", ["michaelis-menten", "lotka-volterra"])
def test_invariants_conserved_by_dopri5(name):
    from physode.ode.solve import odeint

    net = systems.get(name)
    t = torch.linspace(*net.t_span, 21, dtype=F64)
    with torch.no_grad():
        ys = odeint(net, net.y0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    inv = net.invariants(ys)
    assert inv, "every non-stiff preset has an invariant"
    for key, val in inv.items():
        scale = max(val[0].abs().item(), 1.0)
        tol = 1e-12 if key != "lotka_volterra_integral" else 1e-7  # linear vs nonlinear invariant
        assert (val - val[0]).abs().max().item() < tol * scale, key
