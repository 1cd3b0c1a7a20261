import copy

import pytest
import torch

from automoe.layers import ChannelGatedConv2d, GatingEmbedding


def _layer(dispatch="sparse"):
    layer = ChannelGatedConv2d(5, 7, 3, 2, embedding_width=6, gate_l1=0.5, dispatch=dispatch)
    torch.nn.init.normal_(layer.head.weight)  # some channels closed, per sample
    return layer


@pytest.mark.parametrize("training", [False, True])
def test_sparse_matches_reference_outputs_and_gradients(training):
    sparse = _layer().train(training)
    reference = copy.deepcopy(sparse)
    reference.dispatch = "reference"
    x = torch.randn(4, 5, 9, 9)
    e = torch.rand(4, 6)
    outs, grads = [], []
    for layer in (sparse, reference):
        layer.context = e
        y = layer(x)
        aux = layer.aux_loss()
        (y.square().sum() + (aux if aux is not None else 0)).backward()
        outs.append(y)
        grads.append([p.grad for p in layer.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    gates = torch.relu(e @ sparse.head.weight.T)
    closed = gates == 0
    assert closed.any() and (~closed).any()
    assert (outs[0].abs().sum(dim=(2, 3))[closed] == 0).all()  # a closed channel is zero
    if training:
        torch.testing.assert_close(sparse.aux_loss(), 0.5 * gates.sum(1).mean())


def test_gates_start_open_and_need_a_context():
    layer = ChannelGatedConv2d(3, 8, 3, embedding_width=4)
    layer.context = torch.rand(2, 4) + 0.1
    assert (layer.gates() > 0).all()
    layer.context = None
    with pytest.raises(RuntimeError, match="embedding context"):
        layer(torch.randn(2, 3, 5, 5))


def test_embedding_is_shallow_and_non_negative():
    emb = GatingEmbedding(3, 16, 10)
    e = emb(torch.rand(2, 3, 32, 32))
    assert e.shape == (2, 16) and (e >= 0).all()
    assert emb.classify(e).shape == (2, 10)


def test_all_channels_closed_gives_zeros_in_both_paths():
    for dispatch in ("sparse", "reference"):
        layer = ChannelGatedConv2d(3, 4, 3, 2, embedding_width=2, dispatch=dispatch)
        with torch.no_grad():
            layer.head.weight.fill_(-1.0)
        layer.context = torch.rand(2, 2)
        y = layer(torch.randn(2, 3, 7, 7))
        assert y.shape == (2, 4, 4, 4) and not y.any()
