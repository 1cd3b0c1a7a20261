"""The weight-sharing supernet: exact sub-network extraction, sandwich training, BN
recalibration, and which spaces it accepts."""

import random

import pytest
import torch

from automoe.data import load_dataset
from automoe.errors import ConfigError
from automoe.search import SearchSpace
from automoe.search.supernet import SubnetSpec, Supernet, recalibrate_batchnorm
from automoe.training import TrainConfig

SPACE = {
    "name": "super",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["none", "last_stage", "all", "010"]},
               "experts": {"low": 2, "high": 5}, "top_k": {"low": 1, "high": 3},
               "width_multiplier": 0.25, "balance_weight": 0.01},
}


@pytest.fixture(scope="module")
def data():
    return torch.utils.data.Subset(load_dataset("digits", "train"), range(256))


def _supernet(data, **params):
    raw = {**SPACE, "params": {**SPACE["params"], **params}}
    return Supernet(SearchSpace.from_dict(raw), data.dataset.info)


def test_dimensions_and_units(data):
    net = _supernet(data)
    assert net.placements == ["000", "001", "111", "010"]
    assert net.expert_choices == [2, 3, 4, 5] and net.k_choices == [1, 2, 3]
    assert len(net.unit_layers) == 3 and all(len(names) == 2 for names in net.unit_layers)
    assert net.largest() == SubnetSpec("111", 5, 3)
    assert net.smallest() == SubnetSpec("000", 2, 1)
    rng = random.Random(0)
    assert all(s.top_k <= s.experts for s in (net.sample(rng) for _ in range(50)))


@pytest.mark.parametrize("spec", [SubnetSpec("111", 5, 3), SubnetSpec("000", 2, 1),
                                  SubnetSpec("010", 3, 2), SubnetSpec("001", 2, 2),
                                  SubnetSpec("111", 4, 1)])
def test_an_extracted_subnet_computes_what_the_supernet_computes(data, spec):
    net = _supernet(data)
    # train a little so the experts and routers differ from their initialisation
    net.train(data, TrainConfig(epochs=1, batch_size=64, lr=0.05), subnets_per_step=3)
    x = torch.rand(7, 1, 8, 8)
    supernet = net.configure(spec).eval()
    sub = net.extract(spec).eval()
    with torch.no_grad():
        torch.testing.assert_close(sub(x), supernet(x), rtol=1e-5, atol=1e-5)
    moe = [m for m in sub.modules() if hasattr(m, "router") and m.router is not None]
    assert len(moe) == 2 * spec.placement.count("1")
    assert all(m.num_experts == spec.experts and m.top_k == spec.top_k for m in moe)


def test_sandwich_training_lowers_the_loss(data):
    net = _supernet(data)
    history = net.train(data, TrainConfig(epochs=3, batch_size=64, lr=0.05),
                        subnets_per_step=4, distill=True)
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]


def test_batchnorm_recalibration_recomputes_the_statistics(data):
    net = _supernet(data)
    model = net.extract(net.smallest())
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    recalibrate_batchnorm(model, data, batches=2, batch_size=32)
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert bn.momentum == 0.1 and not model.training


def test_spaces_the_supernet_cannot_share_weights_over(data):
    with pytest.raises(ConfigError, match="fix lr in the space"):
        _supernet(data, lr={"low": 0.01, "high": 0.1})
    with pytest.raises(ConfigError, match="needs granularity conv"):
        _supernet(data, granularity="block")
