"""Observations: simulate -> save -> load round trips, validation of every schema rule,
a property test over randomly corrupted files, and atomic saving."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import physode
import systems
from physode import Experiment, InvalidObservations, Observations
from physode.data.schema import SCHEMA_VERSION

FAST = {"rtol": 1e-7, "atol": 1e-9}


def _pendulum_obs(noise: float = 0.01) -> Observations:
    """Two experiments of a damped pendulum, theta and omega observed, with a masked point."""
    system = systems.get("pendulum", damping=0.25)
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.2]])
    obs = physode.simulate(system, np.linspace(0.0, 2.0, 9), y0=y0, noise=noise, seed=7,
                           **FAST)
    exp = obs.experiments[0]
    mask = np.zeros(exp.values["theta"].shape, dtype=bool)
    mask[3] = True
    exp.values["theta"][3] = np.nan
    exp.mask["theta"] = mask
    return obs


def _kinetics_obs() -> Observations:
    """Michaelis-Menten, S and P observed (partial components), per-point sigma."""
    return physode.simulate("michaelis-menten", np.linspace(0.0, 40.0, 6), noise=0.02,
                            relative_noise=True, observe={"concentration": ["S", "P"]}, seed=3,
                            **FAST)


# ------------------------------------------------------------------------- round trips
def test_simulate_save_load_round_trips_exactly(tmp_path: Path) -> None:
    obs = _pendulum_obs()
    path = tmp_path / "pendulum.h5"
    physode.save_observations(obs, path)
    back = physode.load_observations(path)
    assert back.equals(obs)
    assert back.system == "pendulum"
    assert back.creator == f"physode {physode.__version__}"
    assert back.schema_version == SCHEMA_VERSION
    assert back.units == {"theta": "rad", "omega": "rad/s"}
    assert back.time_units == "s"
    assert back.parameter_units["length"] == "m"
    assert float(back.parameters["damping"]) == pytest.approx(0.25)
    assert back.metadata["seed"] == 7 and back.metadata["relative_noise"] is False
    assert back.metadata["method"] == "dopri5"
    for a, b in zip(obs.experiments, back.experiments):
        assert a.name == b.name and a.t0 == b.t0
        for name in a.values:
            assert b.values[name].dtype == np.float64
            np.testing.assert_array_equal(a.values[name], b.values[name])
            np.testing.assert_array_equal(a.sigma[name], b.sigma[name])
        for name in a.y0:
            np.testing.assert_array_equal(a.y0[name], b.y0[name])
    # the mask and its NaN survive
    assert back.experiments[0].mask["theta"][3] and np.isnan(back.experiments[0].values["theta"][3])
    assert "theta" not in back.experiments[1].mask
    # a second trip changes nothing
    physode.save_observations(back, tmp_path / "again.h5")
    assert physode.load_observations(tmp_path / "again.h5").equals(obs)


def test_file_is_self_describing_with_plain_h5py(tmp_path: Path) -> None:
    path = tmp_path / "k.h5"
    physode.save_observations(_kinetics_obs(), path)
    with h5py.File(path, "r") as f:
        # strings are fixed-length UTF-8 (checksummed in the object header): bytes in h5py
        assert f.attrs["schema"] == b"physode.observations"
        info = h5py.check_string_dtype(f.attrs.get_id("schema").dtype)
        assert (info.encoding, info.length) == ("utf-8", len("physode.observations"))
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert f.attrs["system"] == b"michaelis-menten"
        assert list(f["experiments"].attrs["names"]) == [b"exp0"]
        ds = f["experiments/exp0/values/concentration"]
        assert ds.shape == (6, 2) and ds.dtype == np.float64
        assert list(ds.attrs["dims"]) == [b"time", b"species"]
        assert list(ds.attrs["index_species"]) == [0, 3]
        assert f["experiments/exp0/sigma/concentration"].shape == (6, 2)
        assert f["experiments/exp0/time"].attrs["t0"] == 0.0
        assert f["experiments/exp0/y0/concentration"].shape == (4,)
        assert set(f["parameters"].attrs["names"]) == {b"kf", b"kr", b"kcat"}


def test_partial_observation_masks_and_float32_survive(tmp_path: Path) -> None:
    t = np.array([0.0, 0.5, 1.5, 3.0])
    values = np.arange(8, dtype=np.float32).reshape(4, 2)
    values[2, 1] = np.nan
    mask = np.zeros((4, 2), dtype=bool)
    mask[2, 1] = True
    exp = Experiment(t=t, values={"concentration": values},
                     index={"concentration": {"species": [1, 2]}},
                     mask={"concentration": mask}, sigma={"concentration": [0.1, 0.2]},
                     name="run-a", metadata={"operator": "ana", "temps": [290.0, 300.5],
                                             "ok": True, "n": 3})
    obs = Observations(system="michaelis-menten", experiments=[exp],
                       units={"concentration": "mM"}, time_units="min",
                       metadata={"lab": "B12", "channels": ["E", "SE"]})
    path = tmp_path / "partial.h5"
    physode.save_observations(obs, path)
    back = physode.load_observations(path)
    assert back.equals(obs)
    e = back["run-a"]
    assert e.values["concentration"].dtype == np.float32
    np.testing.assert_array_equal(e.index["concentration"]["species"], [1, 2])
    assert e.mask["concentration"].dtype == bool and e.mask["concentration"][2, 1]
    np.testing.assert_array_equal(e.sigma["concentration"], [0.1, 0.2])
    assert e.y0 is None and e.t0 == 0.0
    assert e.metadata == {"operator": "ana", "temps": (290.0, 300.5), "ok": True, "n": 3}
    assert back.metadata == {"lab": "B12", "channels": ("E", "SE")}
    assert back.units == {"concentration": "mM"} and back.time_units == "min"


# ------------------------------------------------------------------------- simulate
def test_simulate_is_reproducible_by_seed() -> None:
    a = physode.simulate("pendulum", np.linspace(0, 1, 5), noise=0.1, seed=11, **FAST)
    b = physode.simulate("pendulum", np.linspace(0, 1, 5), noise=0.1, seed=11, **FAST)
    c = physode.simulate("pendulum", np.linspace(0, 1, 5), noise=0.1, seed=12, **FAST)
    assert a.equals(b)
    assert not np.array_equal(a[0].values["theta"], c[0].values["theta"])
    assert float(a[0].sigma["theta"]) == 0.1 and a[0].sigma["theta"].shape == ()


def test_simulate_noise_free_matches_the_solver_and_batches_experiments() -> None:
    system = systems.get("lotka-volterra")
    t = torch.linspace(0.0, 3.0, 7)
    y0 = torch.tensor([[1.0, 1.0], [2.0, 0.5], [0.5, 2.0]])
    obs = physode.simulate(system, t, y0=y0, **FAST)
    assert obs.experiment_names == ["exp0", "exp1", "exp2"]
    assert all(not e.sigma for e in obs.experiments)
    with torch.no_grad():
        for i, exp in enumerate(obs.experiments):
            ref = physode.odeint(system, y0[i], t, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(exp.values["concentration"], ref.numpy(), rtol=1e-5,
                                       atol=1e-7)
            np.testing.assert_array_equal(exp.y0["concentration"], y0[i].numpy())
    assert obs.parameters["alpha"] == pytest.approx(1.5)


def test_simulate_partial_relative_noise_and_t0() -> None:
    obs = physode.simulate("robertson", [1e-3, 1e-1], t0=0.0, noise=0.01,
                           relative_noise=True, observe={"concentration": ["A", "C"]},
                           method="rodas4", rtol=1e-6, atol=1e-10)
    exp = obs[0]
    assert exp.t0 == 0.0 and exp.t.tolist() == [1e-3, 1e-1]
    assert exp.values["concentration"].shape == (2, 2)
    np.testing.assert_array_equal(exp.index["concentration"]["species"], [0, 2])
    s = exp.sigma["concentration"]
    assert s.shape == (2, 2) and np.all(s > 0)
    # sigma is 1% of the noise-free value; the noisy value lies within a few sigma of it
    clean = s / 0.01
    assert np.all(np.abs(exp.values["concentration"] - clean) < 6 * s)
    assert obs.metadata["method"] == "rodas4"


def test_simulate_observe_by_name_and_errors() -> None:
    obs = physode.simulate("three-body-paper", [0.0, 0.1], observe={"position": {"axis": ["x"]}},
                           **FAST)
    assert obs[0].values["position"].shape == (2, 3, 1)
    assert obs.variables == ("position",)
    with pytest.raises(physode.InvalidArgument, match="no state variable 'psi'"):
        physode.simulate("pendulum", [0.0, 1.0], observe=["psi"])
    with pytest.raises(physode.InvalidArgument, match="label"):
        physode.simulate("michaelis-menten", [0.0, 1.0], observe={"concentration": ["Q"]})
    with pytest.raises(physode.InvalidArgument, match="increasing"):
        physode.simulate("pendulum", [1.0, 0.0])
    with pytest.raises(physode.InvalidArgument, match="noise"):
        physode.simulate("pendulum", [0.0, 1.0], noise=-1.0)


# ------------------------------------------------------------------------- validation
def _corrupt_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _replace(f: h5py.File, path: str, data) -> None:
    attrs = dict(f[path].attrs)
    del f[path]
    f[path] = data
    f[path].attrs.update(attrs)


CASES = {
    "missing time": (lambda f: f["experiments/exp0"].__delitem__("time"),
                     "group '/experiments/exp0', dataset 'time': missing dataset"),
    "missing values": (lambda f: f["experiments/exp1/values"].__delitem__("omega"),
                       "group '/experiments/exp1/values', dataset 'omega': missing dataset"),
    "shape mismatch": (lambda f: _replace(f, "experiments/exp0/values/omega", np.zeros((9, 2))),
                       "dataset 'omega': shape (9, 2) does not match the system's layout"),
    "non-monotonic": (lambda f: _replace(f, "experiments/exp1/time",
                                         np.array([0, 1, 2, 1.5, 3, 4, 5, 6, 7.0])),
                      "group '/experiments/exp1', dataset 'time': times are not increasing"),
    "duplicate": (lambda f: _replace(f, "experiments/exp1/time",
                                     np.array([0, 1, 2, 2, 3, 4, 5, 6, 7.0])),
                  "dataset 'time': duplicate time"),
    "nan without mask": (
        lambda f: f["experiments/exp1/values/omega"].__setitem__(4, np.nan),
        "group '/experiments/exp1/values', dataset 'omega': NaN or inf without a mask"),
    "negative sigma": (lambda f: _replace(f, "experiments/exp0/sigma/theta", -0.01),
                       "group '/experiments/exp0/sigma', dataset 'theta': negative sigma"),
    "unknown system": (lambda f: f.attrs.__setitem__("system", "no-such-system"),
                       "root attribute 'system': unknown system 'no-such-system'"),
    "newer schema": (lambda f: f.attrs.__setitem__("schema_version", SCHEMA_VERSION + 1),
                     f"schema version {SCHEMA_VERSION + 1} is newer than this physode supports"),
    "unlisted member": (lambda f: f["experiments/exp0/values"].create_dataset("extra", data=[1.0]),
                        "not listed"),
    "negative t0": (lambda f: f["experiments/exp0/time"].attrs.__setitem__("t0", 5.0),
                    "attribute 't0'=5.0 is after the first observation time"),
    "wrong dims": (lambda f: f["experiments/exp0/values/theta"].attrs.__setitem__(
        "dims", np.array(["t"], dtype=object)), "attribute 'dims' ['t'] does not match"),
    # known values are information, never checked against the system (issue 19): only
    # their being numbers is a rule of the file
    "bad parameter": (lambda f: _replace(f, "parameters/length", np.array(np.nan)),
                      "group '/parameters', dataset 'length': parameter value is not finite"),
}


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("valid")
    out = {"pendulum": d / "pendulum.h5", "kinetics": d / "kinetics.h5"}
    physode.save_observations(_pendulum_obs(), out["pendulum"])
    physode.save_observations(_kinetics_obs(), out["kinetics"])
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_violation_is_named(case: str, valid_files, tmp_path: Path) -> None:
    edit, message = CASES[case]
    path = _corrupt_copy(valid_files["pendulum"], tmp_path / "bad.h5", edit)
    with pytest.raises(InvalidObservations) as info:
        physode.load_observations(path)
    text = str(info.value)
    assert str(path) in text
    assert message in text


def test_masked_nan_is_valid_but_unmasked_nan_is_not(valid_files, tmp_path: Path) -> None:
    obs = physode.load_observations(valid_files["pendulum"])
    assert np.isnan(obs[0].values["theta"][3])  # masked, so accepted
    path = _corrupt_copy(valid_files["pendulum"], tmp_path / "b.h5",
                         lambda f: f["experiments/exp0/mask"].__delitem__("theta"))
    with pytest.raises(InvalidObservations, match="missing dataset"):
        physode.load_observations(path)


def test_not_hdf5_truncated_and_missing_files(valid_files, tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("time,theta\n0,1\n")
    with pytest.raises(InvalidObservations, match="not an HDF5 file"):
        physode.load_observations(text)
    cut = tmp_path / "cut.h5"
    data = valid_files["pendulum"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidObservations, match="truncated or corrupt"):
        physode.load_observations(cut)
    with pytest.raises(FileNotFoundError):
        physode.load_observations(tmp_path / "absent.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1.0]
    with pytest.raises(InvalidObservations, match="not a physode observations file"):
        physode.load_observations(other)


def test_invalid_objects_are_refused_before_writing(tmp_path: Path) -> None:
    bad = Observations(system="pendulum", experiments=[
        Experiment(t=[0.0, 1.0], values={"theta": [0.0, 1.0]}, sigma={"theta": -1.0})])
    with pytest.raises(InvalidObservations, match="negative sigma"):
        physode.save_observations(bad, tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())
    with pytest.raises(InvalidObservations, match="reserved"):
        Observations(system="pendulum", experiments=[], metadata={"system": "x"})
    with pytest.raises(InvalidObservations, match="has no state variable 'phi'"):
        Observations(system="pendulum", experiments=[
            Experiment(t=[0.0], values={"phi": [0.0]})]).validate()


# ------------------------------------------------------------------------- property test
def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def _unmasked_positions(f: h5py.File, name: str) -> np.ndarray:
    shape = f[name].shape
    parts = name.split("/")
    if len(parts) == 4 and parts[2] == "values":
        mask_name = f"experiments/{parts[1]}/mask/{parts[3]}"
        if mask_name in f:
            return np.flatnonzero(~f[mask_name][()].reshape(-1))
    return np.arange(int(np.prod(shape)))


OTHER_SYSTEMS = ["no-such-system", "nosuchpackage.mod:Thing", "systems.nbody:NBody",
                 "pendulum", "double-pendulum", "robertson", "three-body-paper",
                 "michaelis-menten", "lotka-volterra"]


def _apply(f: h5py.File, kind: str, draw) -> None:
    datasets = _datasets(f)
    if kind == "drop":
        del f[draw(st.sampled_from(datasets))]
    elif kind == "reshape":  # a known parameter value of another shape is information
        name = draw(st.sampled_from([n for n in datasets if not n.startswith("parameters/")]))
        data = f[name][()]
        data = np.array([data, data]) if np.ndim(data) == 0 else np.concatenate(
            [data, data[-1:]], axis=0)
        _replace(f, name, data)
    elif kind == "nan":
        floats = [n for n in datasets if f[n].dtype.kind == "f" and f[n].size
                  and _unmasked_positions(f, n).size]
        name = draw(st.sampled_from(floats))
        pos = draw(st.sampled_from(list(_unmasked_positions(f, name))))
        data = f[name][()].astype(np.float64).reshape(-1)
        data[pos] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        _replace(f, name, data.reshape(f[name].shape))
    elif kind == "reverse":
        name = draw(st.sampled_from([n for n in datasets if n.endswith("/time")]))
        _replace(f, name, f[name][()][::-1])
    elif kind == "negative_sigma":
        name = draw(st.sampled_from([n for n in datasets if "/sigma/" in n]))
        data = f[name][()].astype(np.float64).reshape(-1)
        pos = draw(st.integers(0, data.size - 1))
        data[pos] = -draw(st.floats(1e-300, 1e300))
        _replace(f, name, data.reshape(f[name].shape))
    elif kind == "system":
        current = _text(f.attrs["system"])
        f.attrs["system"] = draw(st.sampled_from([s for s in OTHER_SYSTEMS if s != current]))
    elif kind in ("external_link", "soft_link_out", "external_storage", "virtual"):
        _point_outside(f, kind, draw(st.sampled_from(datasets)))
    elif kind == "huge_shape":
        name = draw(st.sampled_from(datasets))
        shape = draw(st.sampled_from([(2**27,), (2**31,), (2**40,), (2**20, 2**20),
                                      (2**14, 2**14, 2**14)]))
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, shape=shape, dtype=draw(st.sampled_from(["f8", "f4", "?"])),
                         chunks=(1,) * (len(shape) - 1) + (256,))
        f[name].attrs.update(attrs)
    elif kind == "linked_experiment":
        names = [_text(n) for n in f["experiments"].attrs["names"]]
        if len(names) == 1:  # one experiment: list a second name that links to it
            f["experiments"].attrs["names"] = np.asarray([*names, "copy"], dtype=object)
            a, b = names[0], "copy"
        else:
            a, b = draw(st.permutations(names))[:2]
            del f[f"experiments/{b}"]
        f[f"experiments/{b}"] = (f[f"experiments/{a}"] if draw(st.booleans())
                                 else h5py.SoftLink(f"/experiments/{a}"))


def _text(value: str | bytes) -> str:
    """A string attribute as text: physode writes fixed-length UTF-8, which h5py reads as
    bytes; files of other writers may hold str."""
    return value.decode() if isinstance(value, bytes) else value


def _point_outside(f: h5py.File, kind: str, name: str) -> None:
    """Replace dataset ``name`` by a pointer to data in another file."""
    outside = Path(f.filename).with_name("outside.h5")
    data, attrs = f[name][()], dict(f[name].attrs)
    with h5py.File(outside, "w") as g:
        g["secret"] = data
        g.create_group("grp")
    del f[name]
    if kind == "external_link":
        f[name] = h5py.ExternalLink(str(outside), "/secret")
    elif kind == "soft_link_out":
        gateway = name.rpartition("/")[0] + "/zz_gateway"
        f[gateway] = h5py.ExternalLink(str(outside), "/")
        f[name] = h5py.SoftLink(f"/{gateway}/secret")
    elif kind == "external_storage":
        raw = Path(f.filename).with_name("raw.bin")
        arr = np.ascontiguousarray(data)
        raw.write_bytes(arr.tobytes())
        f.create_dataset(name, shape=arr.shape, dtype=arr.dtype,
                         external=[(str(raw), 0, max(arr.nbytes, 1))])
        f[name].attrs.update(attrs)
    else:
        arr = np.asarray(data)
        layout = h5py.VirtualLayout(shape=arr.shape, dtype=arr.dtype)
        layout[...] = h5py.VirtualSource(str(outside), "secret", shape=arr.shape)
        f.create_virtual_dataset(name, layout)
        f[name].attrs.update(attrs)


def _flip_a_data_bit(path: Path, draw) -> None:
    """Flip one bit inside the stored data of a chunked (checksummed) dataset."""
    with h5py.File(path, "r") as f:
        chunked = [n for n in _datasets(f) if f[n].chunks is not None]
        name = draw(st.sampled_from(chunked))
        info = f[name].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[info.byte_offset + draw(st.integers(0, info.size - 1))] ^= 1 << draw(st.integers(0, 7))
    path.write_bytes(bytes(data))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.sampled_from(["pendulum", "kinetics"]),
       kind=st.sampled_from(["drop", "reshape", "nan", "reverse", "negative_sigma", "system",
                             "truncate", "external_link", "soft_link_out", "external_storage",
                             "virtual", "huge_shape", "linked_experiment", "bit_flip"]),
       data=st.data())
def test_corrupted_files_always_raise_invalid_observations(valid_files, base, kind,
                                                           data) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "corrupt.h5"
        shutil.copy(valid_files[base], path)
        if kind == "truncate":
            size = path.stat().st_size
            with open(path, "r+b") as fh:
                fh.truncate(data.draw(st.integers(0, size - 1)))
        elif kind == "bit_flip":
            _flip_a_data_bit(path, data.draw)
        else:
            with h5py.File(path, "r+") as f:
                _apply(f, kind, data.draw)
        with pytest.raises(InvalidObservations) as info:
            physode.load_observations(path)
        assert str(path) in str(info.value)


# ------------------------------------------------------------------------- atomic save
def test_interrupted_save_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "obs.h5"
    first = _pendulum_obs()
    physode.save_observations(first, path)
    before = path.read_bytes()

    import physode.data.hdf5 as mod

    real = mod._write_experiment
    calls = []

    def failing(g, exp, obs, dims):
        calls.append(exp.name)
        real(g, exp, obs, dims)
        if len(calls) == 2:  # the file is half written: one experiment done, one in progress
            raise RuntimeError("disk pulled out mid-write")

    monkeypatch.setattr(mod, "_write_experiment", failing)
    second = _pendulum_obs(noise=0.5)
    with pytest.raises(RuntimeError, match="mid-write"):
        physode.save_observations(second, path)
    assert calls == ["exp0", "exp1"]
    assert path.read_bytes() == before
    assert physode.load_observations(path).equals(first)
    assert sorted(os.listdir(tmp_path)) == ["obs.h5"]  # no temporary file left behind
    monkeypatch.setattr(mod, "_write_experiment", real)
    physode.save_observations(second, path)
    assert physode.load_observations(path).equals(second)


def test_shipped_datasets_load_and_are_small() -> None:
    root = Path(__file__).resolve().parents[2] / "datasets"
    expected = {"three_body_paper.h5": ("three-body-paper", (1000, 3, 3)),
                "three_body_paper_noisy.h5": ("three-body-paper", (1000, 3, 3)),
                "pendulum_damped.h5": ("pendulum", None),
                "michaelis_menten.h5": ("michaelis-menten", None),
                "robertson.h5": ("robertson", (101, 3))}
    for name, (system, shape) in expected.items():
        path = root / name
        assert path.stat().st_size <= 1_000_000
        obs = physode.load_observations(path)
        assert obs.system == system
        if shape is not None:
            assert obs[0].values[obs.variables[0]].shape == shape
    pend = physode.load_observations(root / "pendulum_damped.h5")
    assert pend.variables == ("theta",)
    rob = physode.load_observations(root / "robertson.h5")
    assert rob[0].t[0] == pytest.approx(1e-5) and rob[0].t[-1] == pytest.approx(1e5)
    clean = physode.load_observations(root / "three_body_paper.h5")
    assert not clean[0].sigma and np.allclose(clean[0].t, np.linspace(0, 1, 1000))
    noisy = physode.load_observations(root / "three_body_paper_noisy.h5")
    assert noisy[0].sigma["position"].shape == ()
