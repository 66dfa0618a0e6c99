"""A data file is data, never code and never a pointer elsewhere (issue 12, items 1-4, 14, 15):
system names go to the registry only, links and external storage are refused, sizes are
checked before data is read, corruption is caught by checksums, fixed-step simulations are
checked for accuracy, and a file is loaded only with the system it was written for."""

from __future__ import annotations

import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import physode
import systems
from physode import InvalidObservations, Observations
from physode.cli import main as cli_main
from physode.data.h5safe import MAX_VALUES
from physode.data.hdf5 import load_observations, read_observations, save_observations

FAST = {"rtol": 1e-7, "atol": 1e-9}


@pytest.fixture(scope="module")
def pendulum_file(tmp_path_factory) -> Path:
    system = systems.get("pendulum", damping=0.25)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.2]])
    obs = physode.simulate(system, np.linspace(0.0, 2.0, 9), y0=y0, noise=0.01, seed=7, **FAST)
    path = tmp_path_factory.mktemp("safety") / "pendulum.h5"
    save_observations(obs, path)
    return path


def _copy(src: Path, dst: Path, edit=None) -> Path:
    shutil.copy(src, dst)
    if edit is not None:
        with h5py.File(dst, "r+") as f:
            edit(f)
    return dst


# ------------------------------------------------------------------------- item 1
CODE_REFERENCES = ["sys:exit", "os:abort", "tempfile:mkdtemp", "evil:factory",
                   "shutil:rmtree", "builtins:exit"]


@pytest.fixture()
def evil_module(tmp_path, monkeypatch) -> Path:
    """An importable evil.py whose factory() leaves a marker file; tempfile's directory
    redirected so that a call of mkdtemp would show."""
    marker = tmp_path / "evil-ran"
    (tmp_path / "evil.py").write_text(
        f"def factory():\n    open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    sys.modules.pop("evil", None)
    return tmp_path


@pytest.mark.parametrize("name", CODE_REFERENCES)
def test_a_system_name_in_a_file_never_imports(name, pendulum_file, evil_module) -> None:
    path = _copy(pendulum_file, evil_module / "f.h5",
                 lambda f: f.attrs.__setitem__("system", name))
    for load in (lambda: load_observations(path),
                 lambda: Observations(system=name, experiments=load_observations(
                     pendulum_file).experiments).make_system()):
        with pytest.raises(InvalidObservations) as info:
            load()
        text = str(info.value)
        assert "root attribute 'system'" in text and name in text
        assert "known systems" in text and "pendulum" in text
    assert "evil" not in sys.modules
    assert not (evil_module / "evil-ran").exists()
    assert not list((evil_module / "scratch").iterdir())


def test_inspect_shows_a_file_without_its_system(pendulum_file, evil_module, capsys) -> None:
    for name in ("evil:factory", "sys:exit", "no-such-system"):
        path = _copy(pendulum_file, evil_module / "i.h5",
                     lambda f, name=name: f.attrs.__setitem__("system", name))
        code = cli_main.main(["inspect", str(path)])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert f"system {name!r} (not a registered system here" in out
        assert "exp0: 9 times" in out and "theta: shape (9,)" in out
    assert not (evil_module / "evil-ran").exists()
    obs = read_observations(path)  # the reading path that builds no system
    assert obs.system == "no-such-system" and len(obs) == 2


# ------------------------------------------------------------------------- item 2
def _outside(f: h5py.File) -> Path:
    """A second file beside ``f`` that a hostile file might point into."""
    target = Path(f.filename).with_name("outside.h5")
    with h5py.File(target, "w") as g:
        g["secret"] = np.linspace(0.0, 2.0, 9)
        g.create_group("grp")
    return target


def _external_link(f: h5py.File) -> None:
    target = _outside(f)
    del f["experiments/exp0/time"]
    f["experiments/exp0/time"] = h5py.ExternalLink(str(target), "/secret")


def _soft_link_out(f: h5py.File) -> None:
    target = _outside(f)
    del f["experiments/exp0/y0/theta"]  # a listed member turned into a gateway
    f["experiments/exp0/y0/theta"] = h5py.ExternalLink(str(target), "/secret")
    del f["experiments/exp0/time"]
    f["experiments/exp0/time"] = h5py.SoftLink("/experiments/exp0/y0/theta")


def _external_storage(f: h5py.File) -> None:
    raw = Path(f.filename).with_name("passwd")
    raw.write_bytes(np.linspace(0.0, 2.0, 9).tobytes())
    attrs = dict(f["experiments/exp0/time"].attrs)
    del f["experiments/exp0/time"]
    ds = f.create_dataset("experiments/exp0/time", shape=(9,), dtype="<f8",
                          external=[(str(raw), 0, 72)])
    ds.attrs.update(attrs)


def _virtual(f: h5py.File) -> None:
    target = _outside(f)
    layout = h5py.VirtualLayout(shape=(9,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(target), "secret", shape=(9,))
    attrs = dict(f["experiments/exp0/time"].attrs)
    del f["experiments/exp0/time"]
    f.create_virtual_dataset("experiments/exp0/time", layout)
    f["experiments/exp0/time"].attrs.update(attrs)


POINTERS = {
    "external link": (_external_link, "external link to '/secret'"),
    "soft link out": (_soft_link_out, "leads out of the file"),
    "external storage": (_external_storage, "external raw storage"),
    "virtual dataset": (_virtual, "virtual dataset"),
}


@pytest.mark.parametrize("case", sorted(POINTERS))
def test_pointers_out_of_the_file_are_refused(case, pendulum_file, tmp_path) -> None:
    edit, message = POINTERS[case]
    path = _copy(pendulum_file, tmp_path / "p.h5", edit)
    for read in (load_observations, read_observations):
        with pytest.raises(InvalidObservations) as info:
            read(path)
        text = str(info.value)
        assert str(path) in text and message in text
        assert "group '/experiments/exp0', dataset 'time'" in text


def test_soft_links_inside_the_file_are_followed(pendulum_file, tmp_path) -> None:
    def edit(f: h5py.File) -> None:
        del f["experiments/exp1/time"]
        f["experiments/exp1/time"] = h5py.SoftLink("/experiments/exp0/time")

    path = _copy(pendulum_file, tmp_path / "s.h5", edit)
    assert load_observations(path).equals(load_observations(pendulum_file))


# ------------------------------------------------------------------------- item 3
@pytest.mark.parametrize("shape", [(2**27,), (2**31,), (2**20, 2**20)])
def test_huge_declared_shapes_fail_before_any_read(shape, pendulum_file, tmp_path) -> None:
    def edit(f: h5py.File) -> None:
        attrs = dict(f["experiments/exp0/time"].attrs)
        del f["experiments/exp0/time"]
        ds = f.create_dataset("experiments/exp0/time", shape=shape, dtype="f8",
                              chunks=(1,) * (len(shape) - 1) + (1024,))
        ds.attrs.update(attrs)

    path = _copy(pendulum_file, tmp_path / "huge.h5", edit)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        for read in (load_observations, read_observations):
            with pytest.raises(InvalidObservations) as info:
                read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000
    text = str(info.value)
    assert "dataset 'time'" in text
    if len(shape) == 1:
        assert f"declares {shape[0]} values" in text and str(MAX_VALUES) in text
    else:
        assert "non-empty 1-D array" in text


def test_values_shape_is_checked_before_reading(pendulum_file, tmp_path) -> None:
    def edit(f: h5py.File) -> None:
        attrs = dict(f["experiments/exp0/values/theta"].attrs)
        del f["experiments/exp0/values/theta"]
        ds = f.create_dataset("experiments/exp0/values/theta", shape=(2**22, 2**10),
                              dtype="f8", chunks=(1, 1024))
        ds.attrs.update(attrs)

    path = _copy(pendulum_file, tmp_path / "v.h5", edit)
    with pytest.raises(InvalidObservations, match="does not start with the number of times 9"):
        load_observations(path)


def test_the_value_budget_is_per_file_and_adjustable(pendulum_file) -> None:
    with pytest.raises(InvalidObservations, match="more than the 20 one file may hold"):
        load_observations(pendulum_file, max_values=20)
    assert len(load_observations(pendulum_file, max_values=10_000)) == 2


# ------------------------------------------------------------------------- item 4
def _chunk_span(path: Path, name: str) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
        return info.byte_offset, info.size


def test_datasets_carry_checksums(pendulum_file) -> None:
    with h5py.File(pendulum_file, "r") as f:
        arrays: list[str] = []
        f.visititems(lambda n, o: arrays.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in arrays:
            ds = f[name]
            if ds.shape:
                assert ds.fletcher32, name
            else:  # scalars live in the (checksummed) object header
                assert ds.id.get_create_plist().get_layout() == h5py.h5d.COMPACT, name


@pytest.mark.parametrize("name", ["experiments/exp0/values/theta", "experiments/exp1/time",
                                  "experiments/exp1/values/omega"])
def test_a_flipped_bit_in_the_data_is_reported(name, pendulum_file, tmp_path) -> None:
    path = _copy(pendulum_file, tmp_path / "flip.h5")
    offset, size = _chunk_span(path, name)
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x04
    path.write_bytes(bytes(data))
    group, _, dataset = ("/" + name).rpartition("/")
    with pytest.raises(InvalidObservations) as info:
        load_observations(path)
    text = str(info.value)
    assert f"group '{group}', dataset '{dataset}'" in text and "checksum" in text


def test_a_flipped_bit_in_a_scalar_is_reported(tmp_path) -> None:
    sigma = 0.0123456789
    obs = physode.simulate("pendulum", [0.0, 0.5, 1.0], observe=["theta"], **FAST)
    obs.experiments[0].sigma["theta"] = np.asarray(sigma)
    path = tmp_path / "scalar.h5"
    save_observations(obs, path)
    data = bytearray(path.read_bytes())
    where = bytes(data).find(np.float64(sigma).tobytes())
    assert where > 0 and bytes(data).count(np.float64(sigma).tobytes()) == 1
    data[where + 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidObservations) as info:
        load_observations(path)
    assert "group '/experiments/exp0/sigma', dataset 'theta'" in str(info.value)


def _without_filters(src: Path, dst: Path) -> Path:
    """``src`` rewritten as physode wrote files before checksums: plain contiguous data."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            data, attrs = f[name][()], dict(f[name].attrs)
            del f[name]
            f.create_dataset(name, data=data)
            f[name].attrs.update(attrs)
            assert not f[name].fletcher32
    return dst


def test_files_written_before_checksums_still_load(pendulum_file, tmp_path) -> None:
    old = _without_filters(pendulum_file, tmp_path / "old.h5")
    assert load_observations(old).equals(load_observations(pendulum_file))


def _arrays(obs: Observations) -> list[np.ndarray]:
    out = [v for v in obs.parameters.values()]
    for e in obs.experiments:
        out += [e.t, np.float64(e.t0)]
        for part in (e.values, e.mask, e.sigma, e.y0 or {}):
            out += list(part.values())
    return out


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(position=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7))
def test_a_bit_flip_anywhere_is_refused_or_harmless(position, bit, pendulum_file) -> None:
    """Any single flipped bit: InvalidObservations naming the file, or numbers unchanged
    (a flip in unused bytes, or in a string attribute such as units)."""
    original = load_observations(pendulum_file)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "flip.h5"
        data = bytearray(pendulum_file.read_bytes())
        data[int(position * len(data))] ^= 1 << bit
        path.write_bytes(bytes(data))
        try:
            back = load_observations(path)
        except InvalidObservations as exc:
            assert str(path) in str(exc)
            return
    got, want = _arrays(back), _arrays(original)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


# ------------------------------------------------------------------------- item 14
def test_simulate_refuses_an_inaccurate_fixed_step_method() -> None:
    with pytest.raises(physode.InvalidArgument, match="fixed-step") as info:
        physode.simulate("pendulum", np.linspace(0.0, 10.0, 101), method="euler")
    assert "rtol=1e-10" in str(info.value) and "step_size" in str(info.value)
    with pytest.raises(physode.InvalidArgument, match="step_size=0.01"):
        physode.simulate("pendulum", np.linspace(0.0, 1.0, 5), method="rk4", rtol=1e-12,
                         atol=1e-14, options={"step_size": 0.01})


def test_simulate_records_the_fixed_step_it_used(tmp_path) -> None:
    t = np.linspace(0.0, 1.0, 5)
    obs = physode.simulate("pendulum", t, method="rk4", rtol=1e-6, atol=1e-8,
                           options={"step_size": 1e-3})
    assert obs.metadata["method"] == "rk4" and obs.metadata["step_size"] == 1e-3
    assert 0.0 <= obs.metadata["error_ratio"] <= 1.0
    ref = physode.simulate("pendulum", t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obs[0].values["theta"], ref[0].values["theta"], rtol=1e-6,
                               atol=1e-8)
    save_observations(obs, tmp_path / "rk4.h5")
    assert load_observations(tmp_path / "rk4.h5").metadata["step_size"] == 1e-3


def test_cli_simulate_with_euler_exits_2(tmp_path, capsys) -> None:
    out = tmp_path / "euler.h5"
    code = cli_main.main(["simulate", "pendulum", "--method", "euler", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and "fixed-step" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------- item 15
def test_a_file_is_loaded_only_with_its_own_system(pendulum_file, tmp_path) -> None:
    path = _copy(pendulum_file, tmp_path / "dp.h5",
                 lambda f: f.attrs.__setitem__("system", "double-pendulum"))
    for system in (systems.get("pendulum"), "pendulum"):
        with pytest.raises(InvalidObservations) as info:
            load_observations(path, system=system)
        text = str(info.value)
        assert str(path) in text and "'double-pendulum'" in text and "'pendulum'" in text
    # the same class built by hand, or by name, matches its registry label
    from systems.pendulum import Pendulum

    assert len(load_observations(pendulum_file, system=Pendulum())) == 2
    assert len(load_observations(pendulum_file, system="pendulum")) == 2


@pytest.mark.parametrize("link", ["hard", "soft"])
def test_a_linked_experiment_group_is_not_a_second_experiment(link, pendulum_file,
                                                              tmp_path) -> None:
    def edit(f: h5py.File) -> None:
        del f["experiments/exp1"]
        f["experiments/exp1"] = (f["experiments/exp0"] if link == "hard"
                                 else h5py.SoftLink("/experiments/exp0"))

    path = _copy(pendulum_file, tmp_path / "dup.h5", edit)
    with pytest.raises(InvalidObservations) as info:
        load_observations(path)
    text = str(info.value)
    assert "'exp0' and 'exp1' are the same HDF5 group" in text and str(path) in text
