import pytest
import torch
import torch.nn.functional as F

from automoe.ops import (
    GROUPED_MAX_CHANNELS,
    moe_conv2d,
    moe_conv2d_grouped,
    moe_conv2d_padded,
    moe_conv2d_reference,
    moe_conv2d_sparse,
    resolve_dispatch,
)
from automoe.ops import _common as ops_common

PATHS = {"sparse": moe_conv2d_sparse, "grouped": moe_conv2d_grouped,
         "padded": moe_conv2d_padded}


def _routing(batch: int, num_experts: int, k: int):
    scores = torch.randn(batch, num_experts)
    expert_index = scores.topk(k, dim=1).indices  # distinct experts per sample
    gates = torch.rand(batch, k, dtype=torch.float64, requires_grad=True)
    return expert_index, gates


@pytest.mark.parametrize("num_experts,k", [(1, 1), (3, 1), (3, 2), (3, 3), (5, 2)])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_paths_match_reference_outputs_and_gradients(num_experts, k, kernel, stride, padding,
                                                     with_bias, path):
    batch, cin, cout, h, w = 7, 5, 3, 9, 7  # odd sizes
    x = torch.randn(batch, cin, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(num_experts, cout, cin, kernel, kernel, dtype=torch.float64,
                         requires_grad=True)
    bias = (torch.randn(num_experts, cout, dtype=torch.float64, requires_grad=True)
            if with_bias else None)
    expert_index, gates = _routing(batch, num_experts, k)
    expert_index[2, 0] = -1  # an assignment dropped by a capacity limit
    if k > 1:
        expert_index[4] = -1  # every slot of a sample dropped: its output is 0
    inputs = [x, weight, gates] + ([bias] if with_bias else [])

    y_sparse = PATHS[path](x, weight, bias, expert_index, gates, stride, padding)
    y_ref = moe_conv2d_reference(x, weight, bias, expert_index, gates, stride, padding)
    assert y_sparse.shape == y_ref.shape
    torch.testing.assert_close(y_sparse, y_ref)

    grad_out = torch.randn_like(y_ref)
    g_sparse = torch.autograd.grad(y_sparse, inputs, grad_out)
    g_ref = torch.autograd.grad(y_ref, inputs, grad_out)
    for a, b in zip(g_sparse, g_ref, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_paths_take_channels_last_inputs_and_weights(path, k):
    # a channels-last weight makes a channels-last conv output: the paths must not view it
    x = torch.randn(6, 4, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(3, 8, 4, 3, 3)
    weight = torch.stack([w.contiguous(memory_format=torch.channels_last) for w in weight]
                         ).requires_grad_()
    expert_index, gates = _routing(6, 3, k)
    gates = gates.detach().float().requires_grad_()
    expert_index[1, 0] = -1
    y = PATHS[path](x, weight, None, expert_index, gates, 1, 1)
    y_ref = moe_conv2d_reference(x, weight, None, expert_index, gates, 1, 1)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    grad_out = torch.randn_like(y_ref)
    for a, b in zip(torch.autograd.grad(y, [x, weight, gates], grad_out),
                    torch.autograd.grad(y_ref, [x, weight, gates], grad_out), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_single_expert_equals_plain_conv():
    x = torch.randn(4, 3, 8, 8)
    weight = torch.randn(1, 6, 3, 3, 3)
    index = torch.zeros(4, 1, dtype=torch.long)
    gates = torch.ones(4, 1)
    torch.testing.assert_close(moe_conv2d(x, weight, None, index, gates, 1, 1),
                               F.conv2d(x, weight[0], None, 1, 1))


def test_unselected_experts_get_no_gradient_and_are_not_run():
    x = torch.randn(6, 2, 5, 5)
    weight = torch.randn(4, 3, 2, 3, 3, requires_grad=True)
    index = torch.tensor([[0], [2], [0], [2], [2], [0]])
    gates = torch.ones(6, 1)
    calls = []
    orig = F.conv2d

    def counting_conv(inp, *args, **kwargs):
        calls.append(inp.shape[0])
        return orig(inp, *args, **kwargs)

    torch.nn.functional.conv2d = counting_conv
    try:
        y = moe_conv2d_sparse(x, weight, None, index, gates, 1, 1)
    finally:
        torch.nn.functional.conv2d = orig
    assert sorted(calls) == [3, 3]  # two experts, three samples each
    y.sum().backward()
    assert weight.grad[[1, 3]].abs().sum() == 0
    assert weight.grad[[0, 2]].abs().sum() > 0


def test_grouped_mixes_only_the_selected_filters():
    # samples that did not select an expert leave it out of their filter: it gets no
    # gradient, and a NaN in it changes nothing
    x = torch.randn(6, 2, 5, 5)
    weight = torch.randn(4, 3, 2, 3, 3)
    weight[1] = float("nan")
    weight.requires_grad_(True)
    index = torch.tensor([[0], [2], [0], [2], [2], [0]])
    y = moe_conv2d_grouped(x, weight, None, index, torch.ones(6, 1), 1, 1)
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert weight.grad[[1, 3]].abs().sum() == 0
    assert weight.grad[[0, 2]].abs().sum() > 0


def test_auto_picks_a_path_by_the_layer_shape_on_the_cpu(monkeypatch):
    x = torch.randn(8, 4, 5, 5)  # maps of C*H*W = 100 and O*OH*OW = 25*O
    narrow = torch.randn(4, GROUPED_MAX_CHANNELS // 8, 4, 1, 1)  # B x O at the limit
    wide = torch.randn(4, GROUPED_MAX_CHANNELS // 8 + 1, 4, 1, 1)
    assert resolve_dispatch("auto", x, narrow) == "grouped"
    # above the grouped limit: padded while the busiest expert's run is small, else sparse
    # (wide: 2 samples x 257*4 filter x 25 = 51,400 MACs at most; the run limit shrunk)
    assert resolve_dispatch("auto", x, wide) == "padded"
    assert resolve_dispatch("auto", torch.randn(9, 4, 5, 5), narrow) == "padded"
    with monkeypatch.context() as patch:
        patch.setattr(ops_common, "PADDED_MAX_RUN_MACS", 2 * 257 * 4 * 25 - 1)
        assert resolve_dispatch("auto", x, wide) == "sparse"
        assert resolve_dispatch("auto", x, wide, expert_index=torch.arange(8).remainder(
            4).view(8, 1)) == "sparse"  # 2 samples on every expert
        assert resolve_dispatch("auto", x, wide, expert_index=torch.tensor(
            [[0], [1], [2], [3]] + [[-1]] * 4)) == "padded"  # one on each, the rest dropped
    # a sample's filter against twice its maps: 4*4*9 = 144 <= 2 * (100 + 100) ...
    assert resolve_dispatch("auto", x, torch.randn(4, 4, 4, 3, 3)) == "grouped"
    # ... 12*4*9 = 432 <= 2 * (100 + 12*25); at stride 2 (a 3x3 output map) 432 > 2 * 208
    assert resolve_dispatch("auto", x, torch.randn(4, 12, 4, 3, 3)) == "grouped"
    assert resolve_dispatch("auto", x, torch.randn(4, 12, 4, 3, 3), stride=2) == "padded"
    # the padded path runs E * n_max rows: 432 > 2 * 208 * 1 with an even routing of the
    # 8 samples over 4 experts, 432 <= 2 * 208 * (4 * 5 / 8) with 5 of them on one
    even = torch.arange(8).remainder(4).view(8, 1)
    skewed = torch.tensor([[0]] * 5 + [[1], [2], [3]])
    stride_2 = dict(weight=torch.randn(4, 12, 4, 3, 3), stride=2)
    assert resolve_dispatch("auto", x, **stride_2, expert_index=even) == "padded"
    assert resolve_dispatch("auto", x, **stride_2, expert_index=skewed) == "grouped"
    assert resolve_dispatch("auto", x, **stride_2,
                            expert_index=torch.full((8, 1), -1)) == "padded"  # all dropped
    assert resolve_dispatch("auto", x) == "sparse"  # not a conv expert: sparse
    assert resolve_dispatch("grouped", x) == resolve_dispatch("padded", x) == "sparse"
    assert resolve_dispatch("grouped", x, wide) == "grouped"  # asked for: kept


def test_padded_handles_uneven_and_empty_experts():
    # every sample on one expert (the padding is widest), and all assignments dropped
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, 3, dtype=torch.float64)
    gates = torch.rand(5, 2, dtype=torch.float64)
    index = torch.tensor([[1, 3]] * 4 + [[3, 0]])
    torch.testing.assert_close(moe_conv2d_padded(x, weight, None, index, gates, 1, 1),
                               moe_conv2d_reference(x, weight, None, index, gates, 1, 1))
    dropped = torch.full((5, 2), -1)
    assert not moe_conv2d_padded(x, weight, None, dropped, gates, 1, 1).any()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_empty_batch_and_bad_shapes(path):
    weight = torch.randn(2, 3, 4, 3, 3)
    y = PATHS[path](torch.randn(0, 4, 5, 5), weight, None,
                    torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1), 1, 1)
    assert y.shape == (0, 3, 5, 5)
    with pytest.raises(ValueError, match="input channels"):
        moe_conv2d_sparse(torch.randn(2, 5, 5, 5), weight, None,
                          torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1))
    with pytest.raises(ValueError, match="unknown dispatch"):
        moe_conv2d(torch.randn(2, 4, 5, 5), weight, None, torch.zeros(2, 1, dtype=torch.long),
                   torch.ones(2, 1), dispatch="fast")
