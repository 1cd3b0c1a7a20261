import pytest
import torch

from automoe.data import load_dataset
from automoe.models import create_model
from automoe.training import TrainConfig, train


@pytest.fixture(scope="package")
def trained():
    """A small routed MoE (ResNet-8, last stage E4 k1) trained on digits, and the val set."""
    torch.manual_seed(0)
    train_set = load_dataset("digits", "train")
    val_set = load_dataset("digits", "val")
    info = train_set.info
    model = create_model("resnet8", in_channels=1, num_classes=10, image_size=8,
                         input_mean=info.mean, input_std=info.std, placement="last_stage",
                         num_experts=4, top_k=1, width_multiplier=0.5)
    train(model, train_set, TrainConfig(epochs=4, lr=0.1))
    return model.eval(), val_set
