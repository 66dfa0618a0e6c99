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
