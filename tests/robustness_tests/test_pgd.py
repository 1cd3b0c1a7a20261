import pytest
import torch

from automoe.data import load_dataset
from automoe.models import create_model
from automoe.robustness import PGDConfig, pgd_attack, robust_accuracy
from automoe.training import TrainConfig, evaluate_accuracy, train


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    train_set = load_dataset("digits", "train")
    val_set = load_dataset("digits", "val")
    info = train_set.info
    model = create_model("resnet8", in_channels=1, num_classes=10, image_size=8,
                         input_mean=info.mean, input_std=info.std, placement="last_stage",
                         num_experts=4, top_k=1, width_multiplier=0.5)
    train(model, train_set, TrainConfig(epochs=4, lr=0.1))
    return model.eval(), val_set


def test_attack_stays_in_the_ball_and_the_pixel_range(trained):
    model, val_set = trained
    x = torch.stack([val_set[i][0] for i in range(32)])
    y = torch.tensor([val_set[i][1] for i in range(32)])
    cfg = PGDConfig(eps=0.1, step_size=0.05, steps=5)
    adv = pgd_attack(model, x, y, cfg, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x)


def test_robust_accuracy_sanity(trained):
    model, val_set = trained
    clean = evaluate_accuracy(model, val_set)
    assert robust_accuracy(model, val_set, PGDConfig(eps=0.0)) == clean
    weak = robust_accuracy(model, val_set, PGDConfig(eps=8 / 255, steps=1, max_samples=200))
    strong = robust_accuracy(model, val_set, PGDConfig(eps=8 / 255, steps=10, max_samples=200))
    assert strong <= weak + 0.02  # more steps never help the model beyond noise
    assert robust_accuracy(model, val_set, PGDConfig(eps=0.5, step_size=0.1, steps=10,
                                                     max_samples=200)) < 0.1
    # seeded random start: the same number twice
    cfg = PGDConfig(steps=3, max_samples=100, seed=7)
    assert robust_accuracy(model, val_set, cfg) == robust_accuracy(model, val_set, cfg)


def test_invalid_attack_config():
    from automoe.errors import ConfigError

    with pytest.raises(ConfigError):
        PGDConfig(eps=-1)
    with pytest.raises(ConfigError):
        PGDConfig(steps=-2)
