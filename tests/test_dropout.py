"""The cheap CPU dropout: keep rate, independence, gradient; attention without dropout."""

import pytest
import torch
import torch.nn.functional as F

from tying_env import dropout as fd
from tying_env.models import TiedModel, gpt2_config


def test_dropout_keeps_expected_fraction_and_mean():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = fd.dropout(x, 0.2)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.8, abs=0.005)
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.8)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted dropout keeps the mean
    assert fd.dropout(x, 0.2, training=False) is x and fd.dropout(x, 0.0) is x


def test_dropout_gradient_uses_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(1000, requires_grad=True)
    y = fd.dropout(x, 0.5)
    y.sum().backward()
    assert torch.equal(x.grad != 0, y != 0)
    assert torch.allclose(x.grad[x.grad != 0], torch.tensor(2.0))


@pytest.mark.parametrize("mask", ["none", "bool", "float"])
def test_attention_matches_sdpa_when_nothing_is_dropped(mask):
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    masks = {"none": None, "bool": causal,
             "float": torch.zeros(16, 16).masked_fill(~causal, float("-inf"))}
    # a dropout rate this small drops nothing, but takes the CPU dropout path
    got, _ = fd.attention(torch.nn.Module(), q, k, v, masks[mask], dropout=1e-12,
                          scaling=0.3)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_model_uses_fast_dropout_and_export_does_not():
    model = TiedModel(gpt2_config(2, 16, 2, 8, 20, dropout=0.1))
    kinds = {type(m) for m in model.net.modules() if isinstance(m, torch.nn.Dropout)}
    assert kinds == {fd.Dropout}
    assert model.net.config._attn_implementation == fd.ATTENTION
    exported = model.to_hf()
    assert exported.config._attn_implementation == "sdpa"
    assert {type(m) for m in exported.modules() if isinstance(m, torch.nn.Dropout)} == {
        torch.nn.Dropout}


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_keep_mask_keeps_one_minus_p_independently(p):
    """Keep rate and pairwise independence, within 5 standard errors, over 2**22 draws.

    Neighbours within one 64-bit draw (even, odd) and across draws (odd, even)
    must be kept together with probability (1 - p)**2.
    """
    torch.manual_seed(3)
    n = 2 ** 22
    keep = fd.keep_mask((n,), p)
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    q = 1.0 - p
    assert abs(keep.mean().item() - q) < 5 * (q * p / n) ** 0.5
    for a, b in ((keep[0::2], keep[1::2]), (keep[1:-1:2], keep[2::2])):
        both = (a * b).mean().item()
        se = (q * q * (1 - q * q) / len(a)) ** 0.5
        assert abs(both - q * q) < 5 * se


def test_keep_mask_follows_the_torch_generator():
    torch.manual_seed(4)
    first = fd.keep_mask((3, 1001), 0.3)
    torch.manual_seed(4)
    assert torch.equal(first, fd.keep_mask((3, 1001), 0.3))
    assert not torch.equal(first, fd.keep_mask((3, 1001), 0.3))


def test_attention_dropout_zeroes_p_of_the_weights_and_rescales():
    """With value = identity, the output rows are the dropped-out attention weights."""
    torch.manual_seed(5)
    t = 64
    q = torch.zeros(200, 1, t, 8)  # equal scores: row i attends 1/(i+1) to each visible key
    value = torch.eye(t).expand(200, 1, t, t)
    out, _ = fd.attention(torch.nn.Module(), q, q.clone(), value, None, dropout=0.25)
    weights = out.transpose(1, 2)  # [batch, head, query, key]
    visible = torch.ones(t, t, dtype=torch.bool).tril().expand_as(weights)
    assert torch.all(weights[~visible] == 0)
    kept = weights[visible] != 0
    n = kept.numel()
    assert abs(kept.float().mean().item() - 0.75) < 5 * (0.75 * 0.25 / n) ** 0.5
    rows = torch.arange(1, t + 1, dtype=torch.float32).view(1, 1, t, 1).expand_as(weights)
    torch.testing.assert_close(weights[visible][kept], (1 / rows / 0.75)[visible][kept])
