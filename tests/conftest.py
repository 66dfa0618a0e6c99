import pytest
import torch

# Tests check correctness on small tensors: intra-op threads only add contention (a small
# LU backward ran ~100x slower with 2 threads on a loaded 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _float64_and_threads():
    """Tests run in float64 unless they say otherwise."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def staggered_calls(monkeypatch):
    """A list that grows by one at every staggered sensitivity solve of a fit
    (physode.estimate.staggered), so a test can tell that path ran."""
    import physode.estimate.staggered as staggered

    calls: list[int] = []
    real = staggered.solve_sensitivities

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(staggered, "solve_sensitivities", counted)
    return calls
