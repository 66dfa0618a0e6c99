"""The systems registry: names, overrides, "module:Class", discovery, and the README example."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import systems
from physode.errors import InvalidSystem, UnknownSystem
from physode.model import registry
from physode.model.system import System

README = Path(systems.__file__).with_name("README.md")
PRESETS = {
    "three-body-paper",
    "figure-eight",
    "pythagorean",
    "pendulum",
    "double-pendulum",
    "robertson",
    "michaelis-menten",
    "lotka-volterra",
}


@pytest.fixture
def clean_registry(monkeypatch):
    """Let a test add modules and registrations, then restore everything."""
    saved = dict(registry._REGISTRY)
    saved_plugins = dict(registry._PLUGINS)
    saved_modules = set(sys.modules)
    monkeypatch.setattr(systems, "__path__", list(systems.__path__))
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._PLUGINS.clear()
    registry._PLUGINS.update(saved_plugins)
    registry._IMPORT_FAILURES.clear()
    for name in set(sys.modules) - saved_modules:
        if name.startswith("systems.") or name.startswith("user_pkg"):
            del sys.modules[name]


def test_available_lists_every_preset_with_a_description():
    avail = systems.available()
    assert PRESETS <= set(avail)
    assert all(isinstance(d, str) and d and "\n" not in d for d in avail.values())
    assert list(avail) == sorted(avail)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_y0_t_span_and_a_working_vector_field(name):
    s = systems.get(name)
    assert isinstance(s, System) and s.registry_name == name
    assert s.y0 is not None and s.y0.shape == (s.state_size,) and s.y0.dtype == torch.float64
    t0, t1 = s.t_span
    assert t1 > t0
    dy = s(torch.tensor(t0, dtype=torch.float64), s.y0)
    assert dy.shape == s.y0.shape and torch.isfinite(dy).all()
    for var in s.state_vars:
        assert len(var.dims) == len(var.shape)


def test_get_applies_overrides():
    rob = systems.get("robertson", k1=0.05, y0=[0.9, 0.0, 0.1], t_span=(0, 40))
    assert rob.k1.item() == pytest.approx(0.05)
    assert rob.y0.tolist() == [0.9, 0.0, 0.1] and rob.t_span == (0.0, 40.0)
    p = systems.get("pendulum", length=2.0, unknown_initial_state=["omega"])
    assert p.length.item() == pytest.approx(2.0) and p.free_names() == [
        "length",
        "damping",
        "y0.omega",
    ]
    with pytest.raises(InvalidSystem, match="no parameter or setting \\['lenght'\\]"):
        systems.get("pendulum", lenght=2.0)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownSystem) as info:
        systems.get("three-body")
    msg = str(info.value)
    assert "unknown system 'three-body'" in msg
    for name in PRESETS:
        assert name in msg
    assert isinstance(info.value, ValueError)


def test_module_class_references(clean_registry, tmp_path, monkeypatch):
    pkg = tmp_path / "user_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        textwrap.dedent('''
        import torch
        from physode.model.system import Parameter, StateVar, System

        class Decay(System):
            """dx/dt = -k x."""
            k = Parameter(0.5, positive=True)
            state_vars = (StateVar("x"),)

            def __init__(self, **kw):
                super().__init__()
                self.set_initial_state({"x": 2.0})
                self.t_span = (0.0, 1.0)
                self.configure(**kw)

            def vector_field(self, t, s):
                return {"x": -self.k * s["x"]}

        def make_decay(rate=1.0):
            return Decay(k=rate)

        class NotASystem:
            pass

        def not_a_factory():
            return 42
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    d = systems.get("user_pkg.models:Decay", k=0.25)
    assert d.k.item() == pytest.approx(0.25) and d.registry_name == "user_pkg.models:Decay"
    f = systems.get("user_pkg.models:make_decay", rate=3.0, t_span=(0, 5))
    assert f.k.item() == pytest.approx(3.0) and f.t_span == (0.0, 5.0)
    with pytest.raises(
        UnknownSystem, match="cannot import module 'user_pkg.nope'.*ModuleNotFoundError"
    ):
        systems.get("user_pkg.nope:Decay")
    with pytest.raises(UnknownSystem, match="has no attribute 'Missing'"):
        systems.get("user_pkg.models:Missing")
    with pytest.raises(UnknownSystem, match="not a physode.System subclass"):
        systems.get("user_pkg.models:NotASystem")
    with pytest.raises(UnknownSystem, match="did not produce a physode.System but int"):
        systems.get("user_pkg.models:not_a_factory")
    with pytest.raises(UnknownSystem, match="must look like"):
        systems.get("user_pkg.models:")


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_worked_example_is_a_new_file_that_shows_up(clean_registry, tmp_path):
    """The README's first code block saved as a new file of the systems package appears in
    available() without editing any other file; the README's other blocks then run."""
    blocks = _python_blocks(README.read_text())
    assert len(blocks) >= 3
    extra = tmp_path / "extra_systems"
    extra.mkdir()
    (extra / "oscillator.py").write_text(blocks[0])
    assert "damped-oscillator" not in systems.available()
    systems.__path__.append(str(extra))  # restored by the fixture
    systems.discover(force=True)
    avail = systems.available()
    assert avail["damped-oscillator"] == "mass on a spring with linear damping (k, c; m known)"
    osc = systems.get("damped-oscillator")
    assert osc.free_names() == ["stiffness", "damping"] and osc.t_span == (0.0, 20.0)
    for block in blocks[1:]:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})


def test_broken_user_file_is_reported_not_fatal(clean_registry, tmp_path):
    extra = tmp_path / "broken_systems"
    extra.mkdir()
    (extra / "broken_model.py").write_text("import this_module_does_not_exist\n")
    systems.__path__.append(str(extra))
    with pytest.warns(UserWarning, match="could not import systems.broken_model"):
        systems.discover(force=True)
    assert PRESETS <= set(systems.available())
    with pytest.raises(UnknownSystem, match="systems.broken_model .*ModuleNotFoundError"):
        systems.get("whatever")


def test_duplicate_registration_is_an_error(clean_registry):
    with pytest.raises(InvalidSystem, match="registered twice"):

        @systems.register("robertson", "another")
        def other():  # pragma: no cover - never called
            raise AssertionError


@pytest.mark.parametrize("name", ["three-body-paper", "robertson", "pendulum"])
def test_vector_fields_trace_without_graph_breaks(name):
    """torch.compile must see one graph per vector field (compiled stepping relies on it)."""
    import torch._dynamo as dynamo

    s = systems.get(name)
    dynamo.reset()
    explanation = dynamo.explain(s)(torch.tensor(0.5, dtype=torch.float64), s.y0.expand(3, -1))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_run_on_any_device(name, device):
    """Nothing is hard-coded to the CPU: on the meta device any CPU tensor created inside
    the vector field, the invariants or the parameter machinery would raise."""
    from physode.model.neural import NeuralTerm

    s = systems.get(name)
    s.add_term(NeuralTerm(s, inputs=[s.state_names[0]], hidden=(4,), zero_init=True))
    reference = s(torch.tensor(0.3, dtype=torch.float64), s.y0.expand(2, -1)).detach()
    s = s.to(device)
    s.set_params(**{s.free_names()[0]: s.parameter_specs()[s.free_names()[0]].value})
    s.set_initial_state(unknown=True)
    assert s.y0.device.type == device and s.free_vector().device.type == device
    y = s.y0.expand(2, -1)
    dy = s(torch.tensor(0.3, dtype=torch.float64, device=device), y)
    assert dy.device.type == device and dy.shape == (2, s.state_size)
    if not (device == "meta" and name == "pendulum"):  # pendulum inspects its damping value
        for value in s.invariants(y).values():
            assert value.device.type == device
    if device != "meta":
        torch.testing.assert_close(dy.cpu(), reference, rtol=1e-12, atol=1e-12)


def test_an_installed_package_publishes_systems_through_the_entry_point(
        clean_registry, tmp_path, monkeypatch):
    """A user's installed package listed under the ``physode.systems`` entry-point group is
    discovered like the repository's own systems/ package, module by module."""
    from importlib.metadata import EntryPoint

    pkg = tmp_path / "user_plugin_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "decay.py").write_text(textwrap.dedent("""
        from physode import Parameter, StateVar, System
        from physode.model.registry import register

        @register("plugin-decay", "exponential decay from a plugin")
        class Decay(System):
            k = Parameter(0.5, positive=True)
            state_vars = (StateVar("x"),)

            def __init__(self):
                super().__init__()
                self.set_initial_state({"x": 1.0})

            def vector_field(self, t, s):
                return {"x": -self.k * s["x"]}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    real = registry.entry_points

    def fake(group):
        eps = list(real(group=group))
        return [*eps, EntryPoint("user", "user_plugin_pkg", registry.ENTRY_POINT_GROUP)]

    monkeypatch.setattr(registry, "entry_points", fake)
    assert "plugin-decay" not in registry._REGISTRY
    registry.discover(force=True)
    assert registry.available()["plugin-decay"] == "exponential decay from a plugin"
    assert PRESETS <= set(registry.available())
    assert float(registry.get("plugin-decay").params["k"].detach()) == pytest.approx(0.5)


def test_a_name_from_a_file_is_never_imported(clean_registry, tmp_path, monkeypatch):
    """``references=False`` (names read from data files) refuses "module:Class"."""
    (tmp_path / "evil_mod.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UnknownSystem, match="never imported.*known systems: .*pendulum"):
        registry.get("evil_mod:factory", references=False)
    assert "evil_mod" not in sys.modules
