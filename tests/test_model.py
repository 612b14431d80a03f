"""Semantics of the tied model: gradients, storage, memory, export."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2LMHeadModel

from tying_env.models import TiedModel, gpt2_config
from tying_env.training import InnerOptimizer

L = 4


def make(ties, mode="copy", seed=0):
    torch.manual_seed(seed)
    return TiedModel(gpt2_config(L, 32, 4, 16, 50, dropout=0.0), mode, ties=ties)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (3, 16), generator=g), torch.randint(0, 50, (3, 16), generator=g)


def block_grads(block):
    return [p.grad.clone() for p in block.parameters()]


def reference_grads(model, x, y):
    """Per-position block gradients of a plain GPT-2 running the same weights untied."""
    ref = model.to_hf().train()
    logits = ref(input_ids=x).logits
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    return [block_grads(ref.transformer.h[i]) for i in range(L)]


def reference_loss_without_weight_grad(model, x, y, tied_positions):
    """Reference for copy mode: tied positions' weights are frozen copies."""
    ref = model.to_hf().train()
    for i in tied_positions:
        ref.transformer.h[i].requires_grad_(False)
    logits = ref(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    return ref, loss.item()


def test_copy_mode_root_gets_only_its_own_gradient():
    model = make([0, 0, 2, 0], "copy")
    x, y = batch()
    model.train()
    loss = model.loss(x, y)
    loss.backward()
    ref = reference_grads(model, x, y)
    for got, want in zip(block_grads(model.block(0)), ref[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(block_grads(model.block(2)), ref[2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the sum over positions is clearly different, so the test can tell the modes apart
    summed = [a + b + c for a, b, c in zip(ref[0], ref[1], ref[3], strict=True)]
    assert any((g - s).abs().max() > 1e-4 for g, s in zip(ref[0], summed, strict=True))
    # gradient still flows *through* tied positions into earlier weights and embeddings
    frozen_ref, ref_loss = reference_loss_without_weight_grad(model, x, y, [1, 3])
    assert float(loss) == pytest.approx(ref_loss, rel=1e-6)
    torch.testing.assert_close(model.net.transformer.wte.weight.grad,
                               frozen_ref.transformer.wte.weight.grad, rtol=1e-5, atol=1e-6)


def test_share_mode_root_gets_sum_over_positions():
    model = make([0, 0, 2, 0], "share")
    x, y = batch()
    model.train()
    model.loss(x, y).backward()
    ref = reference_grads(model, x, y)
    want = [a + b + c for a, b, c in zip(ref[0], ref[1], ref[3], strict=True)]
    for got, w in zip(block_grads(model.block(0)), want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["copy", "share"])
def test_tied_blocks_own_no_parameters(mode):
    model = make([0, 0, 0, 0], mode)
    per_block = model.block_numel()
    untied = make(None, mode)
    assert len(model.trainable_parameters()) == len(untied.trainable_parameters()) - 3 * len(
        list(untied.block(1).parameters()))
    trainable, total = model.param_counts()
    trainable_u, total_u = untied.param_counts()
    assert total == total_u == trainable_u
    assert trainable == trainable_u - 3 * per_block
    assert model.net.state_dict().keys() <= untied.net.state_dict().keys()
    assert not any(k.startswith("transformer.h.1.") for k in model.net.state_dict())


def test_untie_clones_storage_and_trains_apart():
    model = make([0, 0, 0, 0])
    opt = InnerOptimizer(model.trainable_parameters(), lr=1e-2)
    model.untie(2)
    opt.sync(model.trainable_parameters())
    a, b = model.block(0), model.block(2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert pa.data_ptr() != pb.data_ptr()
        assert torch.equal(pa, pb)  # the clone starts from the weights it ran
    assert not any(p in opt.optimizer.state for p in b.parameters())  # fresh state
    x, y = batch()
    model.train()
    opt.step(model.loss(x, y))
    diff = max((pa - pb).abs().max().item()
               for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    assert diff > 0


def test_tying_frees_state_and_memory_drops_by_one_block():
    model = make(None)
    opt = InnerOptimizer(model.trainable_parameters(), lr=1e-3)
    x, y = batch()
    model.train()
    opt.step(model.loss(x, y))
    before = model.memory_bytes(opt.optimizer)
    block = model.block(3)
    block_bytes = sum(p.nbytes for p in block.parameters())
    n_tensors = len(list(block.parameters()))
    model.tie(3, 1)
    opt.sync(model.trainable_parameters())
    assert not any(p in opt.optimizer.state for p in block.parameters())
    opt.step(model.loss(x, y))
    after = model.memory_bytes(opt.optimizer)
    assert before.params - after.params == block_bytes
    assert before.grads - after.grads == block_bytes
    # AdamW keeps exp_avg and exp_avg_sq (same size) and a 4-byte step per tensor
    assert before.optimizer - after.optimizer == 2 * block_bytes + 4 * n_tensors
    # and the analytic count agrees with the walk
    trainable, _ = model.param_counts()
    assert after.params == after.grads == 4 * trainable


def test_dependents_keep_weights_when_root_gets_tied():
    model = make([0, 1, 1, 1])
    old = [p.detach().clone() for p in model.block(1).parameters()]
    model.tie(1, 0)
    assert model.ties == (0, 0, 2, 2)
    for p, q in zip(model.block(2).parameters(), old, strict=True):
        assert torch.equal(p, q)
    assert model.block(3) is model.block(2)


def test_expanded_export_gives_same_logits(tmp_path):
    model = make([0, 0, 2, 2]).eval()
    x, _ = batch()
    model.to_hf().save_pretrained(tmp_path)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(x), rtol=0, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(1, L - 1), st.integers(0, L - 1)), max_size=12),
       st.sampled_from(["copy", "share"]))
def test_no_decision_changes_what_other_layers_run(actions, mode):
    model = make(None, mode)
    for layer, choice in actions:
        ran = {k: [p.detach().clone() for p in model.block(k).parameters()] for k in range(L)}
        model.choose(layer, choice)
        for k in (k for k in range(L) if k != layer):
            for p, q in zip(model.block(k).parameters(), ran[k], strict=True):
                assert torch.equal(p, q), (layer, choice, k)
        # storage: tied positions really share their root's tensors, nothing else does
        ptrs = {k: next(model.block(k).parameters()).data_ptr() for k in range(L)}
        for k in range(L):
            same = [j for j in range(L) if ptrs[j] == ptrs[k]]
            assert same == [j for j in range(L) if model.ties[j] == model.ties[k]]
