"""Inductor's vector-ISA probe answered once per machine (physode/ode/vec_isa.py): the probe
runs when no record exists, later answers come from the record, and anything short of
every announced set passing leaves inductor to probe as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._inductor import cpu_vec_isa

from physode.ode import vec_isa
from physode.ode.loop_compile import loop_options

ANNOUNCED = vec_isa._announced()
pytestmark = pytest.mark.skipif(ANNOUNCED is None or not ANNOUNCED[0],
                                reason="the probe record is for x86-64 Linux")


@pytest.fixture()
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., list[int]]:
    """An empty cache folder, no answer yet in this process, and a stand-in for inductor's
    probe that passes the announced sets (or those given) and counts its calls."""
    monkeypatch.setenv("PHYSODE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(vec_isa, "_ANSWER", {})

    def install(passing: list[str] | None = None) -> list[int]:
        calls = [0]
        real = {str(isa): isa for isa in cpu_vec_isa.supported_vec_isa_list}
        names = ANNOUNCED[0] if passing is None else passing

        def probe() -> list[Any]:
            calls[0] += 1
            return [real[n] for n in names]

        monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", probe)
        return calls

    return install


def _record() -> dict[str, Any]:
    return json.loads(vec_isa.record_path(ANNOUNCED[1]).read_text())


def test_the_probe_runs_once_and_its_record_answers_the_next_process(fresh) -> None:
    calls = fresh()
    assert vec_isa.vec_isa_ok() is True
    assert calls == [1]
    assert _record() == {"announced": ANNOUNCED[0], "passed": ANNOUNCED[0]}
    vec_isa._ANSWER.clear()  # as a new process would start
    assert vec_isa.vec_isa_ok() is True
    assert calls == [1]  # answered by the record
    assert loop_options()["cpp.vec_isa_ok"] is True


def test_a_set_that_fails_leaves_inductor_probing(fresh) -> None:
    calls = fresh(passing=ANNOUNCED[0][1:])
    assert vec_isa.vec_isa_ok() is None
    assert calls == [1]
    assert _record()["passed"] == ANNOUNCED[0][1:]
    assert vec_isa.isa_options() == {}
    assert "cpp.vec_isa_ok" not in loop_options()


def test_a_record_of_another_cpu_is_probed_again(fresh) -> None:
    calls = fresh()
    path = vec_isa.record_path(ANNOUNCED[1])
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"announced": ["sse9"], "passed": ["sse9"]}))
    assert vec_isa.vec_isa_ok() is True
    assert calls == [1]
    assert _record()["announced"] == ANNOUNCED[0]
    path.write_text("[]")  # not a record: probed again
    vec_isa._ANSWER.clear()
    assert vec_isa.vec_isa_ok() is True
    assert calls == [2]


def test_the_users_own_setting_stands(fresh, tmp_path: Path) -> None:
    calls = fresh()
    with torch._inductor.config.patch({"cpp.vec_isa_ok": False}):
        assert vec_isa.vec_isa_ok() is None
    assert calls == [0]
    assert not any(tmp_path.rglob("*.json"))


def test_an_unwritable_cache_still_answers(fresh, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PHYSODE_CACHE_DIR", str(blocker))  # a file where a folder goes
    calls = fresh()
    assert vec_isa.vec_isa_ok() is True
    assert calls == [1]
