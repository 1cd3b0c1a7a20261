"""The weight-sharing supernet: exact sub-network extraction, sandwich training, BN
recalibration, and which spaces it accepts."""

import random

import optuna
import pytest
import torch

from automoe.data import load_dataset
from automoe.errors import ConfigError
from automoe.models import list_models
from automoe.search.supernet import SubnetSpec, Supernet, SupernetTrainConfig
from automoe.space import SearchSpace
from automoe.training import TrainConfig, recalibrate_batchnorm

SPACE = {
    "name": "super",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["none", "last_stage", "all", "010"]},
               "experts": {"low": 2, "high": 5}, "top_k": {"low": 1, "high": 3},
               "width_multiplier": {"choices": [0.25, 0.5]}, "balance_weight": 0.01},
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
    assert net.width_choices == [0.25, 0.5]
    assert net.largest() == SubnetSpec("111", 5, 3, 0.5)
    assert net.smallest() == SubnetSpec("000", 2, 1, 0.25)
    rng = random.Random(0)
    samples = [net.sample(rng) for _ in range(50)]
    assert all(s.top_k <= s.experts for s in samples)
    assert {s.width for s in samples} == {0.25, 0.5}


@pytest.fixture(scope="module")
def trained(data):
    net = _supernet(data)
    # train a little so the experts and routers differ from their initialisation
    net.train(data, TrainConfig(epochs=1, batch_size=64, lr=0.05),
              SupernetTrainConfig(subnets_per_step=3))
    return net


@pytest.mark.parametrize("spec", [SubnetSpec("111", 5, 3, 0.5), SubnetSpec("000", 2, 1, 0.25),
                                  SubnetSpec("010", 3, 2, 0.5), SubnetSpec("001", 2, 2, 0.25),
                                  SubnetSpec("111", 4, 1, 0.25), SubnetSpec("000", 2, 1, 0.5)])
def test_an_extracted_subnet_computes_what_the_supernet_computes(trained, spec):
    net = trained
    x = torch.rand(7, 1, 8, 8)
    view = net.subnet(spec).eval()
    sub = net.extract(spec).eval()
    with torch.no_grad():
        torch.testing.assert_close(sub(x), view(x), rtol=1e-5, atol=1e-5)
    moe = [m for m in sub.modules() if hasattr(m, "router") and m.router is not None]
    assert len(moe) == 2 * spec.placement.count("1")
    assert all(m.num_experts == spec.experts and m.top_k == spec.top_k for m in moe)
    assert sub.config.width_multiplier == spec.width
    # the sub-network's tensors are leading slices of the supernet's: channels, experts
    full = net.model.state_dict()
    for name, tensor in sub.state_dict().items():
        source = full[name]
        if source.dim() == tensor.dim() + 1:  # a dense unit runs expert 0
            source = source[0]
        if tensor.dim():
            torch.testing.assert_close(tensor, source[tuple(slice(0, n) for n in tensor.shape)])


def test_gradients_of_a_subnet_reach_only_its_slice_of_the_supernet(data):
    net = _supernet(data)
    spec = SubnetSpec("010", 3, 2, 0.25)
    logits, aux = net.subnet(spec)(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    (logits.sum() + aux).backward()
    moe = net.unit_layers[1][0]  # an MoE conv of the one MoE unit
    grad = dict(net.model.named_parameters())[f"{moe}.weight"].grad  # (E, O, C, kh, kw)
    sub_shape = net.extract(spec).get_parameter(f"{moe}.weight").shape
    inside = tuple(slice(0, n) for n in sub_shape)
    assert grad[inside].abs().sum() > 0
    grad[inside] = 0
    assert not grad.any()  # nothing outside the slice
    dense = net.unit_layers[0][0]  # a unit the sub-network keeps dense: expert 0 only
    grad = dict(net.model.named_parameters())[f"{dense}.weight"].grad
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0


@pytest.mark.parametrize("router", ["linear", "conv", "mlp", "global"])
def test_reordering_all_experts_and_their_router_rows_is_the_same_network(data, router):
    gate = {"gate": "topk"} if router == "global" else {}  # no noise without features
    raw = {**SPACE, "model": {"name": "resnet8", "global_router_blocks": 1},
           "params": {**SPACE["params"], "router": router, **gate}}
    net = Supernet(SearchSpace.from_dict(raw), data.dataset.info)
    net.train(data, TrainConfig(epochs=1, batch_size=64, lr=0.05),
              SupernetTrainConfig(subnets_per_step=2))
    x = torch.rand(5, 1, 8, 8)
    largest = net.largest()
    with torch.no_grad():
        torch.testing.assert_close(net.subnet(largest, (3, 1, 4, 0, 2)).eval()(x),
                                   net.subnet(largest).eval()(x), rtol=1e-5, atol=1e-5)


def test_an_expert_order_runs_those_experts_and_their_router_rows(data):
    # a sub-network runs the order's first E experts (a dense unit its first expert), and
    # its gradients reach only those
    net = _supernet(data)
    spec, order = SubnetSpec("010", 3, 2, 0.25), (4, 2, 0, 1, 3)
    logits, aux = net.subnet(spec, order)(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    (logits.sum() + aux).backward()
    grads = {name: p.grad for name, p in net.model.named_parameters()}
    moe = net.unit_layers[1][0]
    touched = grads[f"{moe}.weight"].flatten(1).abs().sum(1) > 0  # per expert
    assert touched.tolist() == [True, False, True, False, True]
    router = grads[f"{moe}.router.scorer.3.weight"].abs().sum(1) > 0  # per router row
    assert router.tolist() == [True, False, True, False, True]
    dense = grads[f"{net.unit_layers[0][0]}.weight"].flatten(1).abs().sum(1) > 0
    assert dense.tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("sampling", ["first", "subset"])
def test_subset_sampling_trains_every_expert_as_the_dense_conv(data, sampling):
    net = _supernet(data, placement={"choices": ["none", "010"]},
                    experts={"choices": [2, 5]}, top_k=1)
    weight = net.model.get_parameter(f"{net.unit_layers[0][0]}.weight")  # unit 0: dense
    before = weight.detach().clone()
    # the largest (only unit 1 MoE) and the smallest (dense) each step: with the first E,
    # unit 0 only ever runs expert 0; with random orders, each of its experts in turn
    # (no weight decay, which would move every expert of a tensor with a gradient)
    config = TrainConfig(epochs=3, batch_size=64, lr=0.05, weight_decay=0.0)
    net.train(data, config, SupernetTrainConfig(subnets_per_step=2, expert_sampling=sampling))
    moved = (weight.detach() - before).flatten(1).abs().sum(1) > 0  # per expert
    assert moved.tolist() == ([True] * 5 if sampling == "subset" else [True] + [False] * 4)


def test_step_rules_pick_the_largest_first_and_the_smallest_only_in_the_sandwich(data):
    net = _supernet(data)
    rng = random.Random(0)
    sandwich = [net.step_subnets(rng, 4, "sandwich") for _ in range(100)]
    assert all(specs[:2] == [net.largest(), net.smallest()] for specs in sandwich)
    others = [net.step_subnets(rng, 3, "largest_random") for _ in range(100)]
    assert all(len(specs) == 3 and specs[0] == net.largest() for specs in others)
    # the rest are drawn as any sample is: of every width, the smallest no more than others
    rest = [spec for specs in others for spec in specs[1:]]
    assert {spec.width for spec in rest} == {0.25, 0.5}
    assert rest.count(net.smallest()) < 20


def test_training_with_the_largest_and_random_subnets_lowers_the_loss(data):
    net = _supernet(data)
    history = net.train(data, TrainConfig(epochs=3, batch_size=64, lr=0.05),
                        SupernetTrainConfig(subnets_per_step=2, step_rule="largest_random"))
    assert history[-1]["loss"] < history[0]["loss"]
    assert net.trained_with["step_rule"] == "largest_random"


def test_progressive_widths_start_with_the_widest_and_end_with_every_width(data):
    net = _supernet(data, width_multiplier={"choices": [0.25, 0.5, 0.75]})
    total = 40
    widths = [net.step_widths(step, total, "progressive") for step in range(total)]
    assert widths[:20] == [(0.75,)] * 20
    assert widths[20:30] == [(0.75, 0.5)] * 10 and widths[30:] == [(0.75, 0.5, 0.25)] * 10
    assert {net.step_widths(step, total, "all") for step in range(total)} == {(0.75, 0.5, 0.25)}
    for total in (1, 2, 3):  # a short run still ends on every width
        assert net.step_widths(total - 1, total, "progressive") == (0.75, 0.5, 0.25)
    # the smallest and the random sub-networks of a step keep to the step's widths
    rng = random.Random(0)
    for rule in ("sandwich", "largest_random"):
        specs = [spec for _ in range(50) for spec in net.step_subnets(rng, 4, rule, (0.75,))]
        assert {spec.width for spec in specs} == {0.75}
    assert net.step_subnets(rng, 2, "sandwich", (0.75, 0.5))[1] == SubnetSpec("000", 2, 1, 0.5)
    # a supernet of one width has nothing to shrink
    one = _supernet(data, width_multiplier=0.5)
    assert {one.step_widths(step, 8, "progressive") for step in range(8)} == {(0.5,)}


def test_training_with_progressive_widths_lowers_the_loss(data):
    net = _supernet(data)  # progressive shrinking is the default
    history = net.train(data, TrainConfig(epochs=3, batch_size=64, lr=0.05),
                        SupernetTrainConfig(subnets_per_step=2))
    assert history[-1]["loss"] < history[0]["loss"]
    assert net.trained_with["width_schedule"] == "progressive"


def test_an_unknown_width_schedule_is_named(data):
    with pytest.raises(ConfigError, match="width_schedule must be one of all, progressive"):
        _supernet(data).train(data, TrainConfig(epochs=1),
                              SupernetTrainConfig(width_schedule="shrinking"))


def test_an_unknown_step_rule_is_named(data):
    with pytest.raises(ConfigError, match="step_rule must be one of sandwich, largest_random"):
        _supernet(data).train(data, TrainConfig(epochs=1), SupernetTrainConfig(step_rule="smallest"))


def test_an_unknown_expert_sampling_is_named(data):
    with pytest.raises(ConfigError, match="expert_sampling must be one of first, subset"):
        _supernet(data).train(data, TrainConfig(epochs=1), SupernetTrainConfig(expert_sampling="random"))


def test_sandwich_training_lowers_the_loss(data):
    net = _supernet(data)
    history = net.train(data, TrainConfig(epochs=3, batch_size=64, lr=0.05),
                        SupernetTrainConfig(subnets_per_step=4, distill=True))
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]


def test_batchnorm_recalibration_recomputes_the_statistics(data):
    net = _supernet(data)
    model = net.extract(net.smallest())
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    recalibrate_batchnorm(model, data, batches=2, batch_size=32)
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert bn.momentum == 0.1 and not model.training


def test_batchnorm_recalibration_routes_as_evaluation_does(data):
    # a noisy top-k router adds noise only in training mode; the statistics must be those
    # of the routes the evaluated model takes, so they do not depend on the global RNG
    net = _supernet(data, gate="noisy_topk")
    net.train(data, TrainConfig(epochs=1, batch_size=64, lr=0.05),
              SupernetTrainConfig(subnets_per_step=2))
    stats = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = recalibrate_batchnorm(net.extract(SubnetSpec("111", 5, 1, 0.5)), data,
                                      batches=2, batch_size=64)
        stats.append(torch.cat([m.running_var for m in model.modules()
                                if isinstance(m, torch.nn.BatchNorm2d)]))
        assert not any(m.training for m in model.modules())
    assert torch.equal(stats[0], stats[1])


def test_adversarial_supernet_training(data):
    net = _supernet(data)
    config = TrainConfig(epochs=2, batch_size=64, lr=0.05, scheme="pgd_at", adv_steps=2)
    history = net.train(data, config, SupernetTrainConfig(subnets_per_step=3))
    assert len(history) == 2 and history[-1]["loss"] < history[0]["loss"]
    with pytest.raises(ConfigError, match="scheme standard or pgd_at"):
        net.train(data, TrainConfig(epochs=1, scheme="trades"))


def test_spaces_the_supernet_cannot_share_weights_over(data):
    with pytest.raises(ConfigError, match="fix lr in the space"):
        _supernet(data, lr={"low": 0.01, "high": 0.1})
    with pytest.raises(ConfigError, match="needs granularity conv"):
        _supernet(data, granularity="block")
    with pytest.raises(ConfigError, match="remove upcycle"):
        _supernet(data, upcycle=0.5)


@pytest.mark.parametrize("name", list_models())
def test_every_backbone_has_exact_subnets_of_every_width(data, name):
    """For every registered model: a narrow sub-network with some units dense runs on the
    supernet's leading slices and computes what its extracted stand-alone model computes."""
    raw = {**SPACE, "model": {"name": name},
           "params": {**SPACE["params"], "placement": {"choices": ["none", "all"]},
                      "experts": {"low": 2, "high": 3}, "top_k": {"low": 1, "high": 2},
                      "width_multiplier": {"choices": [0.125, 0.25]}}}
    net = Supernet(SearchSpace.from_dict(raw), data.dataset.info)
    units = net.units
    mixed = "".join("1" if u % 2 else "0" for u in range(units))
    spec = SubnetSpec(mixed, 2, 2, 0.125)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.extract(spec).eval()(x), net.subnet(spec).eval()(x),
                                   rtol=1e-5, atol=1e-5)


def test_a_supernet_file_round_trips_and_old_formats_are_named(data, tmp_path):
    from automoe.storage import save_checkpoint

    net = _supernet(data)
    path = tmp_path / "super.safetensors"
    net.save(path, [{"epoch": 1, "loss": 1.0, "subnet_loss": 1.0}])
    again = Supernet.load(path)
    spec = SubnetSpec("010", 3, 2, 0.25)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again.extract(spec).eval()(x), net.extract(spec).eval()(x))
    assert again.history[0]["loss"] == 1.0 and again.trained_with == {}  # never trained
    old = tmp_path / "old.safetensors"
    save_checkpoint(net.model, old, {"supernet": {"format": "automoe.supernet.v1"}})
    with pytest.raises(ConfigError, match="format automoe.supernet.v1.*train it again"):
        Supernet.load(old)


def test_supernet_trials_with_repeats_average_over_recalibration_seeds(data, tmp_path):
    import optuna

    from automoe.search import TrialRunner
    from automoe.storage import AtomicFileSystemArtifactStore

    net = _supernet(data)
    space = SearchSpace.from_dict({**SPACE, "evaluation": {"repeats": 2,
                                                           "attack": {"steps": 1,
                                                                      "max_samples": 32}}})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path), supernet=net,
                               recalibration_batches=2, usage_plots=False), n_trials=2)
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        assert trial.user_attrs["fidelity"] == "supernet"
        runs = trial.user_attrs["repeats"]
        assert len(runs) == 2 and runs[0]["seed"] != runs[1]["seed"]
        assert trial.values[0] == pytest.approx((runs[0]["val_accuracy"]
                                                 + runs[1]["val_accuracy"]) / 2)


def test_a_candidate_with_unset_expert_fields_gets_the_subnet_its_config_builds(data):
    # the space searches placement only: a trial's model takes E and k from the model
    # config's defaults, and the supernet must build that same network (not E = 1)
    space = SearchSpace.from_dict({"name": "p", "dataset": {"name": "digits"},
                                   "params": {"placement": {"choices": ["none", "last_stage"]},
                                              "width_multiplier": 0.5}})
    net = Supernet(space, data.dataset.info)
    candidate = space.suggest(optuna.trial.FixedTrial({"placement": "last_stage"}))
    spec = net.spec_for(candidate)
    assert spec == SubnetSpec.from_config(candidate.config, space.units_per_stage())
    assert (spec.experts, spec.top_k) == (candidate.config.num_experts, candidate.config.top_k)
    sub = net.extract(spec)
    assert sub.config.num_experts == candidate.config.num_experts
    assert sub.config.is_moe and sub.config.top_k == candidate.config.top_k
    dense = space.suggest(optuna.trial.FixedTrial({"placement": "none"}))
    assert net.spec_for(dense).is_dense

