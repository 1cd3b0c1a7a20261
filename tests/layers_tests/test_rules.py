"""One rule table: a layer, a model config and a search space refuse the same settings
with the same words."""

import pytest

from automoe.errors import ConfigError
from automoe.layers import ROUTING_RULES, MoEConv2d, check_routing
from automoe.models import default_config
from automoe.space import SearchSpace

# (layer kwargs, config fields, the rule's words)
BROKEN = [
    ({"num_experts": 2, "top_k": 3}, {"num_experts": 2, "top_k": 3},
     "top_k must be between 1 and num_experts=2, got 3"),
    ({"num_experts": 4, "top_k": 2, "gate": "st_top1"},
     {"num_experts": 4, "top_k": 2, "gate": "st_top1"},
     "gate 'st_top1' routes to one expert; got top_k=2"),
    ({"num_experts": 4, "top_k": 1, "global_routing": True, "gate": "noisy_topk"},
     {"router": "global", "gate": "noisy_topk"},
     "a global router takes gate 'topk', 'vmoe' or 'st_top1'"),
    ({"num_experts": 4, "top_k": 1, "gate": "topk", "balance_loss": "load"},
     {"gate": "topk", "balance_loss": "load"},
     "balance_loss 'load' needs gate 'noisy_topk', got 'topk'"),
    ({"num_experts": 4, "top_k": 1, "capacity_factor": 0.0}, {"capacity_factor": 0.0},
     "capacity_factor must be > 0 or null, got 0.0"),
    ({"num_experts": 4, "top_k": 1, "overflow": "spill"}, {"overflow": "spill"},
     "overflow must be one of ('reassign', 'drop'), got 'spill'"),
    ({"num_experts": 4, "top_k": 1, "expert_init": "copied"}, {"expert_init": "copied"},
     "expert_init must be one of ('shared', 'independent'), got 'copied'"),
]


@pytest.mark.parametrize("layer_kwargs,config_fields,words", BROKEN)
def test_layer_and_config_refuse_alike(layer_kwargs, config_fields, words):
    with pytest.raises(ValueError) as layer_error:  # ConfigError is a ValueError
        MoEConv2d(8, 8, 3, **layer_kwargs)
    with pytest.raises(ConfigError) as config_error:
        default_config("resnet8", placement="all", **config_fields)
    assert str(layer_error.value) == str(config_error.value) == words
    assert isinstance(layer_error.value, ConfigError)


def test_a_space_refuses_with_the_rule_too():
    with pytest.raises(ConfigError, match="gate 'st_top1' routes to one expert"):
        SearchSpace.from_dict({"name": "s", "params": {"placement": "all", "experts": 4,
                                                      "top_k": 2, "gate": "st_top1"}})


def test_rules_read_config_fields_and_only_what_is_given():
    fields = set(default_config("resnet8").__dataclass_fields__) | {"global_routing"}
    for rule in ROUTING_RULES:
        assert set(rule.settings) <= fields, rule.settings
    with pytest.raises(ConfigError):
        check_routing(num_experts=4, top_k=5)
    check_routing(top_k=5)  # k <= E needs both: a layer without E is not judged on it
