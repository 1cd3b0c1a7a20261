import dataclasses
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from automoe import count_flops, create_model, list_models
from automoe.errors import ConfigError
from automoe.models import MoEResNetConfig, register_model, resolve_placement

SMALL = dict(in_channels=1, num_classes=10, image_size=8)


def _small(name, **cfg):
    # resnet18 is too big to train in the suite at full width; shrink it
    if name == "resnet18":
        cfg.setdefault("width_multiplier", 0.125)
    return create_model(name, **SMALL, **cfg)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("placement", ["none", "last_stage", "all"])
def test_forward_backward_and_config_round_trip(name, placement):
    model = _small(name, placement=placement, num_experts=3, top_k=2)
    x = torch.rand(4, 1, 8, 8)
    model.train()
    out = model(x)
    assert out.shape == (4, 10)
    (out.sum() + model.aux_loss()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "w_noise" not in n)

    blob = json.dumps(model.config.to_dict())
    rebuilt = create_model(model.model_name, **json.loads(blob))
    assert rebuilt.config == model.config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(model(x), rebuilt(x))


@pytest.mark.parametrize("name", list_models())
def test_dense_flops_match_torch_flop_counter(name):
    model = _small(name, placement="none").eval()
    macs = count_flops(model, (1, 8, 8))
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(3, 1, 8, 8))
    assert macs["active"] == macs["all_experts"] == counter.get_total_flops() / 2 / 3


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("num_experts,k", [(2, 1), (4, 2), (4, 4)])
def test_active_flops_equal_what_sparse_dispatch_executes(name, num_experts, k):
    model = _small(name, placement="last_two", num_experts=num_experts, top_k=k).eval()
    for layer in model.moe_layers():  # routing that differs between samples
        torch.nn.init.normal_(layer.router.w_gate.weight)
    macs = count_flops(model, (1, 8, 8))
    batch = 5
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(batch, 1, 8, 8))
    assert counter.get_total_flops() / 2 / batch == macs["active"]
    assert macs["active"] <= macs["all_experts"]


def test_active_flops_grow_with_k_and_include_the_router():
    dense = count_flops(_small("resnet8", placement="none"), (1, 8, 8))["active"]
    per_k = [count_flops(_small("resnet8", placement="all", num_experts=4, top_k=k),
                         (1, 8, 8))["active"] for k in (1, 2, 3, 4)]
    assert per_k == sorted(per_k) and len(set(per_k)) == 4
    # k=1: the same convs as the dense net, plus one Linear(C_in -> E) router per MoE conv;
    # the six convs of ResNet-8 read 16, 16 | 16, 32 | 32, 64 channels
    router_macs = (16 + 16 + 16 + 32 + 32 + 64) * 4
    assert per_k[0] == dense + router_macs


def test_cifar_resnet18_dense_macs():
    model = create_model("resnet18", placement="none")
    macs = count_flops(model, (3, 32, 32))["active"]
    assert macs == pytest.approx(0.556e9, rel=0.01)


def test_models_take_pixels_and_normalise_inside():
    model = _small("resnet8", input_mean=(0.5,), input_std=(0.25,)).eval()
    assert torch.equal(model.input_mean.flatten(), torch.tensor([0.5]))
    x = torch.rand(2, 1, 8, 8)
    shifted = create_model("resnet8", **SMALL)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("input_")}
    shifted.load_state_dict(weights, strict=False)  # same weights, identity normalisation
    torch.testing.assert_close(model(x), shifted.eval()((x - 0.5) / 0.25))


def test_placement_presets_and_masks():
    assert resolve_placement("last_stage", (1, 1, 1)) == (False, False, True)
    assert resolve_placement("last_two", (2, 1, 1)) == (False, False, True, True)
    assert resolve_placement("every_other", (1, 1, 1)) == (False, True, False)
    assert resolve_placement("101", (1, 1, 1)) == (True, False, True)
    with pytest.raises(ConfigError, match="one bit per block"):
        resolve_placement("11", (1, 1, 1))


def test_invalid_configs_raise_config_error():
    with pytest.raises(ConfigError, match="top_k"):
        MoEResNetConfig(num_experts=2, top_k=3)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(ConfigError, match="invalid config"):
        create_model("resnet8", not_a_field=1)


def test_registry_rejects_duplicates_and_filters():
    assert "resnet8" in list_models("resnet*") and list_models("vgg*") == []

    def resnet8(**config):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet8)


def test_config_fields_are_documented_dataclass_fields():
    names = {f.name for f in dataclasses.fields(MoEResNetConfig) if f.init}
    assert {"placement", "num_experts", "top_k", "balance_weight", "width_multiplier"} <= names
