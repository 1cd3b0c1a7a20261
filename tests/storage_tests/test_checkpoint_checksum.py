"""A checkpoint's checksum: any flipped bit is refused, an older checkpoint still loads."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from automoe.errors import AutomoeError
from automoe.models import create_model
from automoe.storage import load_checkpoint, save_checkpoint
from automoe.storage.checkpoint import FORMAT


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    torch.manual_seed(0)
    model = create_model("resnet8", image_size=8, placement="last_stage", num_experts=2,
                         width_multiplier=0.25)
    save_checkpoint(model, path, extra={"note": "x"})
    return path, model


def test_a_checkpoint_round_trips_with_its_checksum(saved):
    path, model = saved
    loaded, meta = load_checkpoint(path)
    assert meta["extra"] == {"note": "x"}
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_every_flipped_bit_is_refused(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    damaged = tmp_path / "damaged.safetensors"
    loaded = []
    # 400 places spread over the header and the weights, a different bit at each
    for i in range(400):
        at = i * (len(data) - 1) // 399
        flipped = bytearray(data)
        flipped[at] ^= 1 << (i % 8)
        damaged.write_bytes(bytes(flipped))
        try:
            load_checkpoint(damaged)
            loaded.append(at)
        except AutomoeError as exc:
            assert "\n" not in str(exc)
    assert loaded == []


def test_a_checkpoint_without_a_checksum_loads_with_a_warning(saved, tmp_path, caplog):
    path, model = saved
    # as an older automoe wrote it: the same metadata but the checksum
    metadata = {"format": FORMAT, "model_name": model.model_name,
                "model_config": json.dumps(model.config.to_dict()), "extra": "{}"}
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata=metadata)
    with caplog.at_level(logging.WARNING):
        load_checkpoint(old)
    (record,) = [r for r in caplog.records if "no checksum" in r.getMessage()]
    assert "\n" not in record.getMessage()
