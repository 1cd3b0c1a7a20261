"""The launch recorder's counts of autotune sessions and compiles, replayed on the CPU.

The launches are recorded without executing the kernels (``execute=False``), so these run
without the interpreter at real shapes; the rules counted are Triton's (see
automoe.kernels.launches).
"""

import pytest
import torch

from automoe.kernels import dw_splits
from automoe.kernels.launches import CONFIGS_ENV, configs_in_use, record_launches
from automoe.ops.moe_conv_triton import moe_conv2d_triton


def _step(batch, experts=4, k=1, size=32, channels=64, dtype=torch.float32):
    x = torch.randn(batch, channels, size, size, dtype=dtype, requires_grad=True)
    weight = torch.randn(experts, channels, channels, 3, 3, dtype=dtype, requires_grad=True)
    index = torch.randn(batch, experts).topk(k, 1).indices
    gates = torch.rand(batch, k, dtype=dtype, requires_grad=True)
    y = moe_conv2d_triton(x, weight, None, index, gates, 1, 1)
    torch.autograd.grad(y.float().sum(), [x, weight, gates])
    return y


def test_the_batch_and_the_expert_count_cost_no_compile():
    # these batches give the weight-gradient kernel 1, 3 and 16 row splits: one value of
    # each class Triton would specialise an int on (== 1, other, divisible by 16)
    assert [dw_splits(b * 32 * 32, 4, 4 * 64 * 64 * 9) for b in (8, 24, 128)] == [1, 3, 16]
    with record_launches(configs=2, execute=False) as one:
        _step(8)
    with record_launches(configs=2, execute=False) as many:
        for batch in (8, 24, 128):
            _step(batch)
        _step(8, experts=16)
    assert one.summary()["sessions"] == 3  # forward, input gradient, weight gradient
    assert many.summary()["sessions"] == 3
    assert many.summary()["specialisations"] == one.summary()["specialisations"] == 3
    assert many.compiles == one.compiles == 3 * 2
    assert many.launches == 4 * one.launches


def test_a_new_shape_or_dtype_is_a_new_session_timed_over_every_config():
    with record_launches(configs=8, execute=False) as record:
        _step(8)
        _step(8, size=16)  # another layer shape: another key
        _step(8, dtype=torch.float16)  # the dtypes are part of the key
    assert record.summary()["sessions"] == 9
    assert record.compiles == 9 * 8


def test_the_channels_last_layout_is_another_compile_of_the_same_key():
    with record_launches(configs=4, execute=False) as record:
        _step(8)
        x = torch.randn(8, 64, 32, 32).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(4, 64, 64, 3, 3)
        moe_conv2d_triton(x, weight, None, torch.zeros(8, 1, dtype=torch.long),
                          torch.ones(8, 1), 1, 1)
    # the forward's key is shared, its strides are specialised differently (1 vs % 16)
    summary = record.summary()
    assert summary["sessions"] == 3 and summary["specialisations"] == 4
    assert record.compiles == 3 * 4 + 1


def test_recording_without_executing_leaves_the_outputs_zero():
    with record_launches(execute=False):
        y = _step(4)
    assert y.abs().sum() == 0


def test_the_config_switch(monkeypatch):
    monkeypatch.delenv(CONFIGS_ENV, raising=False)
    assert configs_in_use(8) == 8
    monkeypatch.setenv(CONFIGS_ENV, "2")
    assert configs_in_use(8) == 2
    monkeypatch.setenv(CONFIGS_ENV, "50")
    assert configs_in_use(8) == 8
    for bad in ("0", "two"):
        monkeypatch.setenv(CONFIGS_ENV, bad)
        with pytest.raises(ValueError, match=CONFIGS_ENV):
            configs_in_use(8)
