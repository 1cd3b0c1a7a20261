import pytest
import torch

# Two cores: keep torch from oversubscribing them; determinism for gradient checks.
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
