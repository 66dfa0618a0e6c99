"""The traced augmented field (SensitivityField's eager fast path): equal to the
vmap/jvp form, following parameter updates, and never used for a field that branches on
tensor values."""

from __future__ import annotations

import torch

from physode import Parameter, StateVar, System
from physode.estimate.sensitivity import SensitivityField


class Logistic(System):
    """y' = r y (1 - y / K)."""

    r = Parameter(0.7, positive=True)
    K = Parameter(2.0, positive=True)
    state_vars = (StateVar("y"),)

    def vector_field(self, t, s):
        return {"y": self.r * s["y"] * (1 - s["y"] / self.K)}


class Switch(Logistic):
    """The same field with a Python branch on the state's value."""

    def vector_field(self, t, s):
        if float(s["y"].sum()) > 1.0:  # data-dependent: a trace would freeze it
            return {"y": -self.r * s["y"]}
        return {"y": self.r * s["y"]}


def _field(system: System) -> SensitivityField:
    names = [n for n, _ in system.named_parameters()]
    P = len(names)
    tangents = {n: torch.eye(P, dtype=torch.float64)[:, i].reshape(P, *p.shape)
                for i, (n, p) in enumerate(system.named_parameters())}
    return SensitivityField(system, tangents, P)


def _z(y: list[float], P: int) -> torch.Tensor:
    y_ = torch.tensor(y, dtype=torch.float64)[:, None]
    s = torch.linspace(-1.0, 1.0, len(y) * P, dtype=torch.float64).reshape(len(y), P)
    return torch.cat([y_, s], -1)


def test_traced_field_equals_the_vmap_form_and_follows_parameter_updates() -> None:
    field = _field(Logistic())
    P = field.n_dir
    t = torch.tensor(0.3, dtype=torch.float64)
    z = _z([0.1, 0.5, 1.5], P)
    with torch.no_grad():
        fast = field(t, z)
        assert len(field._graphs) == 1 and next(iter(field._graphs.values())) is not None
        torch.testing.assert_close(fast, field.augmented(t, z), rtol=0, atol=0)
        # closed form: d/dr = y (1 - y/K), d/dK = r y² / K², J_y = r (1 - 2y/K)
        r, K, y = 0.7, 2.0, z[:, 0]
        expect_f = r * y * (1 - y / K)
        assert torch.allclose(fast[:, 0], expect_f, rtol=1e-14)
        for p in field.system.parameters():  # new values reach the traced graph
            p.add_(0.25)
        torch.testing.assert_close(field(t, z), field.augmented(t, z), rtol=0, atol=0)
        assert not torch.allclose(field(t, z), fast)
        field(t, _z([0.2, 0.3], P))  # another shape: its own graph
        assert len(field._graphs) == 2


def test_a_field_that_branches_on_data_runs_untraced() -> None:
    field = _field(Switch())
    t = torch.tensor(0.0, dtype=torch.float64)
    with torch.no_grad():
        low = field(t, _z([0.2], field.n_dir))
        assert list(field._graphs.values()) == [None]
        high = field(t, _z([1.5], field.n_dir))
    assert low[0, 0] > 0 > high[0, 0]  # both branches still taken


def test_fields_on_one_system_share_its_graph_only_for_equal_tangents() -> None:
    system = Logistic()
    a, b = _field(system), _field(system)
    t = torch.tensor(0.0, dtype=torch.float64)
    z = _z([0.4, 0.9], a.n_dir)
    with torch.no_grad():
        a(t, z)
        b(t, z)
        assert len(a._graphs) == 1 and a._graphs is b._graphs
        # the same shapes with other tangents (only r): a graph of its own, right values
        only_r = SensitivityField(system, {"_raw.r": torch.tensor([1.0, 0.0],
                                                                 dtype=torch.float64),
                                           "_raw.K": torch.tensor([0.0, 0.0],
                                                                 dtype=torch.float64)}, 2)
        out = only_r(t, z)
        assert len(a._graphs) == 2
        torch.testing.assert_close(out, only_r.augmented(t, z), rtol=0, atol=0)
