import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_and_threads():
    """Tests run in float64 unless they say otherwise, single-threaded for stable timing-free
    results on small tensors."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
