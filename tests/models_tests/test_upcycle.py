"""Sparse upcycling: the MoE starts from its trained dense twin's function."""

import pytest
import torch

from automoe.errors import ConfigError
from automoe.models import create_model, dense_twin, upcycle


def _moe(**fields):
    torch.manual_seed(0)
    return create_model("resnet8", in_channels=1, num_classes=10, image_size=16,
                        width_multiplier=0.5, **fields)


def _trained_like(twin):
    """A twin whose weights and BatchNorm statistics are far from initialisation."""
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for name, b in twin.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.5)
    return twin


@pytest.mark.parametrize("granularity", ["conv", "block"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("placement", ["last_stage", "all"])
def test_upcycled_moe_computes_its_dense_twin(granularity, top_k, placement):
    moe = _moe(placement=placement, granularity=granularity, num_experts=3, top_k=top_k,
               expert_init="independent")
    twin = _trained_like(dense_twin(moe))
    x = torch.rand(7, 1, 16, 16)
    moe.eval(), twin.eval()
    before = moe(x)
    expected = twin(x)
    assert not torch.allclose(before, expected, atol=1e-3)  # the check can fail
    upcycle(moe, twin)
    assert torch.allclose(moe(x), expected, atol=1e-5)
    # the routers kept their own weights: they are the one new part
    assert any(".router." in name for name, _ in moe.named_parameters())


def test_condconv_upcycles_exactly():
    moe = _moe(placement="last_two", granularity="condconv", num_experts=4)
    twin = _trained_like(dense_twin(moe))
    x = torch.rand(5, 1, 16, 16)
    moe.eval(), twin.eval()
    upcycle(moe, twin)
    assert torch.allclose(moe(x), twin(x), atol=1e-5)


def test_noise_breaks_the_symmetry_repeatably():
    moe = _moe(placement="last_stage", num_experts=4)
    twin = _trained_like(dense_twin(moe))
    upcycle(moe, twin, 0.1, generator=torch.Generator().manual_seed(1))
    weight = moe.features[3][0].conv1.weight.detach().clone()  # (E, O, C, 3, 3)
    assert not torch.equal(weight[0], weight[1])
    dense = twin.features[3][0].conv1.weight
    spread = (weight - dense).std() / dense.std()
    assert 0.05 < spread < 0.2
    upcycle(moe, twin, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(moe.features[3][0].conv1.weight, weight)


@pytest.mark.parametrize("granularity", ["pathway", "channel"])
def test_experts_without_a_dense_shape_are_refused(granularity):
    moe = _moe(placement="last_stage", granularity=granularity, num_experts=2)
    with pytest.raises(ConfigError, match="upcycling"):
        upcycle(moe, dense_twin(moe))


def test_a_twin_of_another_architecture_is_refused():
    moe = _moe(placement="last_stage", num_experts=2)
    other = create_model("resnet8", in_channels=1, num_classes=10, image_size=16,
                         width_multiplier=0.75)
    with pytest.raises(ConfigError, match="cannot upcycle"):
        upcycle(moe, other)
