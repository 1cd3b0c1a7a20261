import pytest
import torch

from automoe.ops import (
    channel_gated_conv2d,
    channel_gated_conv2d_reference,
    channel_gated_conv2d_sparse,
    resolve_channel_dispatch,
)


def _inputs(batch, in_channels, out_channels, closed, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels, 7, 5, generator=gen, requires_grad=True)
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=gen, requires_grad=True)
    gates = torch.rand(batch, out_channels, generator=gen)
    gates = torch.where(torch.rand(batch, out_channels, generator=gen) < closed, 0.0, gates)
    return x, weight, gates.requires_grad_()


@pytest.mark.parametrize("closed", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_sparse_matches_reference_outputs_and_gradients(closed, stride, padding):
    x, weight, gates = _inputs(5, 3, 11, closed)
    y_ref = channel_gated_conv2d_reference(x, weight, gates, stride, padding)
    grad = torch.randn_like(y_ref)
    refs = torch.autograd.grad(y_ref, (x, weight, gates), grad)
    y = channel_gated_conv2d_sparse(x, weight, gates, stride, padding)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref)
    if closed == 1.0:  # every channel closed: nothing is computed, so no graph
        assert not y.requires_grad
        return
    open_gates = gates > 0
    got_x, got_w, got_g = torch.autograd.grad(y, (x, weight, gates), grad)
    torch.testing.assert_close(got_x, refs[0])
    torch.testing.assert_close(got_w, refs[1])
    # closed channels' gates get no gradient on the sparse path; the ReLU that makes them
    # is 0 there too, so only open gates' gradients reach anything upstream
    torch.testing.assert_close(got_g * open_gates, refs[2] * open_gates)

def test_dispatch_resolution():
    x = torch.zeros(1, 1, 4, 4)
    assert resolve_channel_dispatch("auto", x, 32, 16) == "sparse"  # CPU
    assert resolve_channel_dispatch("triton", x, 24, 16) == "sparse"  # 16 does not divide 24
    assert resolve_channel_dispatch("triton", x, 32, 16) == "triton"
    with pytest.raises(ValueError, match="unknown dispatch"):
        channel_gated_conv2d(x, torch.zeros(2, 1, 3, 3), torch.ones(1, 2), dispatch="dense")
