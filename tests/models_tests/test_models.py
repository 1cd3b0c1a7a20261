"""Registry-driven: every registered model, every granularity."""

import copy
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from automoe import count_flops, create_model, list_models
from automoe.errors import ConfigError
from automoe.layers import MoEModule
from automoe.models import (
    GRANULARITIES,
    MoENetConfig,
    ResNetConfig,
    default_config,
    register_model,
    resolve_placement,
)

# 32x32 inputs: block experts need more than one value per channel for BatchNorm batch
# statistics, and VGG pools five times.
SIZE = 32
SHAPE = (3, SIZE, SIZE)
NARROW = dict(in_channels=3, num_classes=10, image_size=SIZE, width_multiplier=0.125,
              embedding_width=8, global_router_blocks=1)


def _model(name, **cfg):
    return create_model(name, **{**NARROW, **cfg})


def _spread_routers(model):
    """Random router weights, so routing differs between samples."""
    for layer in model.moe_layers():
        router = getattr(layer, "router", None)
        if router is not None and router.scorer is not None:
            torch.nn.init.normal_(router.scorer[-1].weight)
    if model.global_router is not None:
        torch.nn.init.normal_(model.global_router.head.weight)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_train_step_sparse_equals_reference_and_config_round_trip(name, granularity):
    model = _model(name, placement="last_stage", granularity=granularity, num_experts=3,
                   top_k=2, balance_weight=0.1)
    assert model.moe_layers()
    _spread_routers(model)
    x, y = torch.rand(6, *SHAPE), torch.randint(0, 10, (6,))
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y) + model.aux_loss(y)
    loss.backward()
    if granularity == "condconv":  # a soft mixture runs every kernel: nothing to balance
        assert model.aux_loss(y) == 0
    else:
        assert model.aux_loss(y) != 0
    # Without a gradient: only block experts that got no sample in this batch.
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert all(".experts." in n for n in no_grad), no_grad

    reference = copy.deepcopy(model)
    for layer in reference.moe_layers():
        layer.dispatch = "reference"
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)

    blob = json.dumps(model.config.to_dict())
    rebuilt = create_model(model.model_name, **json.loads(blob))
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())  # same names and shapes
    torch.testing.assert_close(model(x), rebuilt.eval()(x))


@pytest.mark.parametrize("name", list_models())
def test_dense_flops_match_torch_flop_counter(name):
    model = _model(name, placement="none").eval()
    macs = count_flops(model, SHAPE)
    assert macs["dense"] == macs["active"] == macs["executed"]
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(2, *SHAPE))
    assert macs["active"] == pytest.approx(counter.get_total_flops() / 2 / 2, rel=1e-9)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("dispatch", ["sparse", "grouped", "padded"])
def test_executed_flops_equal_what_runs(name, granularity, dispatch):
    model = _model(name, placement="last_two", granularity=granularity, num_experts=3, top_k=2,
                   dispatch=dispatch)
    _spread_routers(model)
    model.eval()
    x = torch.rand(5, *SHAPE)
    macs = count_flops(model, SHAPE, inputs=x)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert macs["executed"] == pytest.approx(counter.get_total_flops() / 2 / 5, rel=1e-9)
    assert macs["executed"] <= macs["dense"]
    if dispatch == "grouped" and granularity in ("conv", "pathway"):
        # one conv per sample with its k = 2 filters mixed: less than two expert convs
        assert macs["executed"] < macs["active"]
    else:
        assert macs["active"] <= macs["executed"]


@pytest.mark.parametrize("granularity", ["conv", "pathway", "block"])
def test_active_flops_grow_with_k(granularity):
    per_k = [count_flops(_model("resnet8", placement="all", granularity=granularity,
                                num_experts=4, top_k=k), SHAPE)["active"] for k in (1, 2, 3, 4)]
    assert per_k == sorted(per_k) and len(set(per_k)) == 4
    dense = count_flops(_model("resnet8", placement="all", granularity=granularity,
                               num_experts=4, top_k=4, dispatch="reference"), SHAPE)["dense"]
    assert per_k[-1] == dense


def test_router_cost_is_in_the_active_path():
    dense = count_flops(_model("resnet8", placement="none", width_multiplier=1.0), SHAPE)
    moe = count_flops(_model("resnet8", placement="all", num_experts=4, top_k=1,
                             width_multiplier=1.0), SHAPE)
    # k=1: the same convs, plus one Linear(C_in -> E) per MoE conv (inputs 16,16|16,32|32,64)
    assert moe["active"] == dense["active"] + (16 + 16 + 16 + 32 + 32 + 64) * 4


def test_flops_anchors():
    assert count_flops(create_model("resnet18"), SHAPE)["dense"] == pytest.approx(0.556e9,
                                                                                 rel=0.01)
    # AdvMoE ResNet-18, E = 2, pathway ratio 0.5, ResNet-20-like global router:
    # about 0.152 GMACs of experts and backbone plus 0.041 of router
    advmoe = create_model("resnet18", placement="all", granularity="pathway", num_experts=2,
                          top_k=1, router="global", gate="st_top1", expert_ratio=0.5)
    assert count_flops(advmoe, SHAPE)["active"] == pytest.approx(0.193e9, rel=0.02)


def test_channel_flops_follow_the_gates():
    model = _model("resnet8", placement="all", granularity="channel").eval()
    layers = model.moe_layers()
    x = torch.rand(4, *SHAPE)
    before = count_flops(model, SHAPE, inputs=x)
    with torch.no_grad():  # close half of every layer's channels for every sample
        for layer in layers:
            layer.head.weight[: layer.out_channels // 2] = -1.0
    after = count_flops(model, SHAPE, inputs=x)
    assert after["active"] < before["active"] and after["dense"] == before["dense"]


def test_models_take_pixels_and_normalise_inside():
    model = _model("resnet8", input_mean=(0.5,), input_std=(0.25,)).eval()
    x = torch.rand(2, *SHAPE)
    plain = _model("resnet8")
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("input_")}
    plain.load_state_dict(weights, strict=False)  # same weights, identity normalisation
    torch.testing.assert_close(model(x), plain.eval()((x - 0.5) / 0.25))


def test_placement_presets_and_masks():
    assert resolve_placement("last_stage", (1, 1, 1)) == (False, False, True)
    assert resolve_placement("last_two", (2, 1, 1)) == (False, False, True, True)
    assert resolve_placement("every_other", (1, 1, 1)) == (False, True, False)
    assert resolve_placement("all_but_first", (2, 1)) == (False, True, True)
    assert resolve_placement("101", (1, 1, 1)) == (True, False, True)
    with pytest.raises(ConfigError, match="one bit per unit"):
        resolve_placement("11", (1, 1, 1))
    # VGG: one unit per conv
    assert len(default_config("vgg16").units) == 13
    assert sum(isinstance(m, MoEModule) for m in _model(
        "vgg11", placement="all_but_first").modules()) == 7


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_experts=2, top_k=3), "top_k"),
    (dict(granularity="layer"), "granularity"),
    (dict(gate="st_top1", top_k=2), "st_top1"),
    (dict(router="global", gate="noisy_topk"), "global router"),
    (dict(balance_loss="load", gate="vmoe"), "needs gate 'noisy_topk'"),
    (dict(expert_ratio=1.5), "expert_ratio"),
    (dict(capacity_factor=0), "capacity_factor"),
])
def test_invalid_configs_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ResNetConfig(**kwargs)


def test_unknown_models_and_fields():
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(ConfigError, match="invalid config"):
        create_model("resnet8", not_a_field=1)
    with pytest.raises(TypeError, match="placement units"):
        MoENetConfig()


def test_registry_rejects_duplicates_and_filters():
    assert {"resnet8", "resnet18", "resnet34"} <= set(list_models("resnet*"))
    assert list_models("vgg*") == ["vgg11", "vgg16"]
    expected = {"resnet8", "resnet18", "resnet20", "resnet34", "preact_resnet18", "wrn16_4",
                "wrn28_10", "vgg11", "vgg16", "small_cnn"}
    assert expected <= set(list_models())

    def resnet8(**config):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet8)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 16, 16), (2, 1, 16, 12), (1, 16, 16)])
def test_a_model_refuses_inputs_it_was_not_built_for(shape):
    from automoe.errors import InputShapeError

    model = create_model("resnet8", in_channels=1, image_size=16, placement="last_stage",
                         num_experts=2, width_multiplier=0.25).eval()
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(InputShapeError, match=r"built for \(B, 1, 16, 16\)") as error:
        model(torch.rand(*shape))
    assert str(tuple(shape)) in str(error.value)
