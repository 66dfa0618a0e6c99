"""The progress bar says "compiling" while a compiled fit builds its loops (issue 13)."""

import io
from types import SimpleNamespace

import numpy as np
import pytest

from physode.estimate import optimizers
from physode.estimate.optimizers import COMPILING, Tracker


@pytest.mark.parametrize("compiled", [True, False])
def test_bar_says_compiling_until_the_first_iteration(compiled: bool, monkeypatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(optimizers.sys, "stderr", out)
    problem = SimpleNamespace(compile=compiled, get_vector=lambda: np.zeros(2))
    tracker = Tracker(problem, max_iter=5, progress=True, desc="lm")
    assert (COMPILING in str(tracker.bar.postfix or "")) is compiled
    tracker.iteration(1.5, 0.1)
    assert COMPILING not in str(tracker.bar.postfix)
    assert "chi2=1.5" in str(tracker.bar.postfix)
    tracker.close()
