"""The HDF5 results store: records round-trip, studies are checked on resume, writes are
atomic, nothing is unpickled or imported from the file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest

from physode.errors import InvalidArgument
from physode.estimate.store import ResultStore


@dataclass
class Record:
    x: np.ndarray
    chi2: float
    status: str
    history: list[float] = field(default_factory=list)
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _record(i: int) -> Record:
    return Record(np.arange(3.0) * i, chi2=float(i) if i else math.inf, status=f"s{i}",
                  history=[1.0, 0.5, math.nan], error=None if i else "boom",
                  counts={"nfev": i})


def test_records_round_trip_exactly(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "runs.h5")
    sec = store.section("starts", Record, {"seed": 3, "optimizer": "lm"})
    assert sec.done() == {}
    for i in (2, 0, 7):
        sec.put(i, _record(i))
    done = ResultStore(tmp_path / "runs.h5", resume=True).section(
        "starts", Record, {"seed": 3, "optimizer": "lm"}).done()
    assert sorted(done) == [0, 2, 7]
    for i, rec in done.items():
        want = _record(i)
        np.testing.assert_array_equal(rec.x, want.x)
        assert rec.x.dtype == np.float64
        assert rec.chi2 == want.chi2 and rec.status == want.status
        assert rec.error == want.error and rec.counts == want.counts
        np.testing.assert_array_equal(rec.history, want.history)
    assert store.sections() == ["starts"]


def test_a_store_with_records_needs_resume_and_the_same_study(tmp_path: Path) -> None:
    path = tmp_path / "runs.h5"
    ResultStore(path).section("starts", Record, {"seed": 1, "n": 5}).put(0, _record(1))
    with pytest.raises(InvalidArgument, match="already holds 1 finished record.*resume"):
        ResultStore(path).section("starts", Record, {"seed": 1, "n": 5})
    with pytest.raises(InvalidArgument, match="another study: seed is 1 there, 2 now"):
        ResultStore(path, resume=True).section("starts", Record, {"seed": 2, "n": 5})
    # another section of the same file is independent
    ResultStore(path).section("profile", Record, {"seed": 9}).put(0, _record(2))
    assert ResultStore(path).sections() == ["profile", "starts"]


def test_skipped_results_are_not_stored(tmp_path: Path) -> None:
    sec = ResultStore(tmp_path / "r.h5").section("s", Record,
                                                 skip=lambda r: r.status == "s1")
    sec.put(0, _record(1))
    sec.put(1, _record(2))
    assert sorted(sec.done()) == [1]


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.h5"
    sec = ResultStore(path).section("s", Record)
    sec.put(0, _record(1))
    before = path.read_bytes()
    with pytest.raises(InvalidArgument, match="cannot store a object"):
        sec.put(1, Record(np.zeros(1), 1.0, "x", counts={"bad": object()}))  # type: ignore
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(InvalidArgument, match="expected a Record"):
        sec.put(2, "not a record")  # type: ignore[arg-type]


def test_bad_files_and_names_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(InvalidArgument, match="cannot read it as HDF5"):
        ResultStore(junk)
    with pytest.raises(InvalidArgument, match="section name"):
        ResultStore(tmp_path / "a.h5").section("a/b", Record)
    with pytest.raises(InvalidArgument, match="dataclass"):
        ResultStore(tmp_path / "a.h5").section("a", dict)
    # a record with a field the type does not have is named, not silently dropped
    path = tmp_path / "odd.h5"
    ResultStore(path).section("s", Record).put(0, _record(1))
    with h5py.File(path, "a") as f:
        f["s/000000"].create_dataset("intruder", data=np.zeros(2))
    with pytest.raises(InvalidArgument, match="intruder"):
        ResultStore(path, resume=True).section("s", Record).done()
