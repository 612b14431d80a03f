"""The published tie mechanics (issue 26): `tying_env.published_ties` replays the published
`apply_action` exactly (checked against the published operations on real tensors), ours
replays `TiedModel.choose`, and `scripts/published_collapse.py` reports them faithfully."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from scripts import published_collapse as pc
from tying_env.models import TiedModel, gpt2_config
from tying_env.published_ties import STARTS, OurTies, PublishedTies, replay


class Reference:
    """The published operations, literally, on one small block of Parameters per position."""

    def __init__(self, n_layer: int, start: str):
        torch.manual_seed(0)
        self.blocks = [nn.Linear(3, 2) for _ in range(n_layer)]
        for i, block in enumerate(self.blocks):
            if start == "first" and i > 0:
                self.tie(i, 0)
            else:
                block.requires_grad_(start == "none" or i == 0)

    def tie(self, i: int, j: int) -> None:
        for p_i, p_j in zip(self.blocks[i].parameters(), self.blocks[j].parameters(),
                            strict=True):
            p_i.data = p_j.data
            p_i.requires_grad = False

    def choose(self, i: int, choice: int) -> None:
        if choice < i:
            self.tie(i, choice)
        else:
            for p in self.blocks[i].parameters():
                p.requires_grad = True

    def pointers(self) -> list[tuple[int, ...]]:
        """Per position, the storage of each of its parameters."""
        return [tuple(p.untyped_storage().data_ptr() for p in block.parameters())
                for block in self.blocks]

    @property
    def block_numel(self) -> int:
        return sum(p.numel() for p in self.blocks[0].parameters())

    def counted_params(self) -> int:
        """The published "# trainable params": numel over requires_grad Parameters."""
        return sum(p.numel() for b in self.blocks for p in b.parameters() if p.requires_grad)

    def unique_params(self) -> int:
        seen = {p.untyped_storage().data_ptr(): p.numel()
                for b in self.blocks for p in b.parameters() if p.requires_grad}
        return sum(seen.values())


def same_partition(a: list, b: list) -> bool:
    """Positions grouped alike: a[i] == a[k] exactly when b[i] == b[k]."""
    return all((a[i] == a[k]) == (b[i] == b[k]) for i in range(len(a)) for k in range(len(a)))


def random_decisions(n_layer: int, sweeps: int, seed: int) -> list[tuple[int, int]]:
    """Random choices over {copy 0..i-1, independent} (some independent choices > i)."""
    rng = np.random.default_rng(seed)
    return [(i, int(rng.integers(0, i + 2))) for _ in range(sweeps) for i in range(1, n_layer)]


@pytest.mark.parametrize("n_layer", [6, 12])
@pytest.mark.parametrize("start", STARTS)
def test_published_ties_follow_the_published_operations(n_layer: int, start: str) -> None:
    for seed in range(4):
        ref, machine = Reference(n_layer, start), PublishedTies.start(n_layer, start)
        for step, (i, choice) in enumerate(random_decisions(n_layer, 8, seed)):
            ref.choose(i, choice)
            machine = machine.choose(i, choice)
            pointers = ref.pointers()
            where = f"seed {seed}, decision {step}: choose({i}, {choice})"
            assert same_partition(pointers, list(machine.storage)), where
            assert machine.distinct_storages == len({p[0] for p in pointers}), where
            grads = [b.weight.requires_grad for b in ref.blocks]
            assert list(machine.trainable) == grads, where
            assert machine.trainable_positions == sum(grads), where
            assert machine.trainable_positions == sum(s == k for k, s in enumerate(machine.state))
            assert machine.counted_params(ref.block_numel) == ref.counted_params(), where
            assert machine.unique_params(ref.block_numel) == ref.unique_params(), where


def test_storages_only_merge() -> None:
    machine = PublishedTies.start(12)
    for i, choice in random_decisions(12, 20, seed=3):
        after = machine.choose(i, choice)
        assert after.distinct_storages <= machine.distinct_storages
        assert set(after.storage) <= set(machine.storage)  # no storage is ever made
        machine = after


def test_tying_a_root_leaves_its_dependents_on_the_old_tensor() -> None:
    ref, machine = Reference(4, "none"), PublishedTies.start(4, "none")
    for i, choice in [(2, 1), (1, 0), (3, 3)]:  # 2 copies 1; 1 copies 0; 3 independent
        ref.choose(i, choice)
        machine = machine.choose(i, choice)
    assert machine.storage == (0, 0, 1, 3)  # 2 still runs 1's old storage, frozen
    assert machine.trainable == (True, False, False, True)
    machine = machine.choose(2, 2)  # independent: trains 1's old tensor, no copy is made
    assert machine.storage == (0, 0, 1, 3) and machine.trainable_positions == 3
    ours = replay(4, [(2, 1), (1, 0), (3, 3), (2, 2)], "none")[1]
    assert ours.ties == (0, 0, 2, 3)  # 2 kept 1's weights (promoted), still its own root


def test_the_issues_example_collapses_while_counting_positions_trainable() -> None:
    """12 layers: after 10 random sweeps one storage, a few positions "trainable"; under the
    paper's ε schedule with an always-independent greedy policy, one storage and nearly
    every position "trainable" -- while ours keeps a block for each."""
    storages, counted = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        decisions = [(i, int(rng.integers(0, i + 1))) for _ in range(10) for i in range(1, 12)]
        ref, machine = Reference(12, "frozen"), PublishedTies.start(12)
        for i, choice in decisions:
            ref.choose(i, choice)
            machine = machine.choose(i, choice)
        assert machine.distinct_storages == len({p[0] for p in ref.pointers()})
        storages.append(machine.distinct_storages)
        counted.append(machine.trainable_positions)
    assert max(storages) <= 2 and np.mean(storages) < 1.5
    assert np.mean(counted) > 2 * np.mean(storages)
    run = pc.replay_seed(12, "eps-independent", 100, seed=0)
    assert run["published_storages"][-1] == 1 and run["published_trainable"][-1] >= 10
    assert run["ours_storages"][-1] >= 10 and run["ours_trainable"][-1] >= 10


def blocks_of(model: TiedModel) -> tuple[list[int], int]:
    """Per position, the storage its block runs, and the trainable blocks (unique)."""
    ptrs = [model.block(i).attn.c_attn.weight.data_ptr() for i in range(model.n_layer)]
    trainable = {ptrs[i] for i in range(model.n_layer)
                 if model.block(i).attn.c_attn.weight.requires_grad}
    return ptrs, len(trainable)


@pytest.mark.parametrize("start", STARTS)
def test_our_ties_follow_the_tied_model(start: str) -> None:
    n_layer = 6
    ties = {"first": [0] * n_layer}.get(start)
    frozen = range(1, n_layer) if start == "frozen" else ()
    torch.manual_seed(0)
    model = TiedModel(gpt2_config(n_layer, 8, 2, 4, 11), ties=ties, frozen=frozen)
    ours = OurTies.start(n_layer, start)
    for i, choice in random_decisions(n_layer, 6, seed=1):
        model.choose(i, choice)
        ours = ours.choose(i, choice)
        assert ours.ties == model.ties and ours.frozen == set(model.frozen)
        ptrs, trainable = blocks_of(model)
        assert same_partition(ptrs, list(ours.storage))
        assert ours.distinct_storages == len(set(ptrs))
        assert ours.trainable_storages == trainable == ours.trainable_positions


def test_bad_decisions_are_refused() -> None:
    for machine in (PublishedTies.start(4), OurTies.start(4)):
        for i, choice in [(0, 0), (4, 0), (2, -1)]:
            with pytest.raises(ValueError):
                machine.choose(i, choice)
    with pytest.raises(ValueError):
        PublishedTies.start(4, "tied")


# ------------------------------------------------------------------ the script
def small() -> dict:
    return pc.collapse([4, 6], list(pc.POLICIES), sweeps=6, seeds=range(3))


def test_the_study_is_deterministic_for_a_seed() -> None:
    assert pc.replay_seed(6, "random", 5, seed=2) == pc.replay_seed(6, "random", 5, seed=2)
    assert pc.replay_seed(6, "random", 5, seed=2) != pc.replay_seed(6, "random", 5, seed=3)
    data = small()
    assert data == small()
    for cell in data["cells"]:
        for series in cell["series"].values():
            assert len(series["mean"]) == 7  # the reset, then every sweep
        assert cell["series"]["published_storages"]["mean"][0] == cell["n_layer"]
        assert cell["trainable_is_roots"]


def test_epsilon_follows_the_published_schedule() -> None:
    assert pc.epsilon(0) == 1.0 and pc.epsilon(1) == pytest.approx(0.95)
    assert pc.epsilon(200) == 0.01
    rng = np.random.default_rng(0)
    late = [c for s, i, c in pc.decisions("eps-first", 5, 120, rng) if s >= 100]
    assert late.count(0) > 0.9 * len(late)


def test_the_page_reports_the_json(tmp_path) -> None:
    data = small()
    data["command"], data["code"] = "python scripts/published_collapse.py --test", {
        "commit": "0123456789abcdef", "dirty": False}
    pc.write_outputs(data, tmp_path / "c.json", tmp_path / "c.png", tmp_path / "c.md")
    assert pc.main(["--from-json", str(tmp_path / "c.json"), "--figure",
                    str(tmp_path / "again.png"), "--page", str(tmp_path / "again.md")]) == 0
    text = (tmp_path / "c.md").read_text(encoding="utf-8")
    assert (tmp_path / "again.md").read_text(encoding="utf-8") == text.replace(
        "](c.png)", "](again.png)")
    assert "`python scripts/published_collapse.py --test`" in text and "`0123456789ab`" in text
    rows = [line.split(" | ") for line in text.splitlines()
            if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(data["cells"])
    for row, cell in zip(rows, data["cells"], strict=True):
        assert row[0] == f"| {cell['n_layer']}" and row[1] == pc.LABELS[cell["policy"]]
        for column, key in zip((2, 3, 4, 6, 7), pc.TABLE, strict=True):
            final = cell["final"][key]
            assert float(row[column].rstrip(" |").split(" ")[0]) == pytest.approx(
                final["mean"], abs=0.05)
            if final["min"] != final["max"]:
                assert f"({final['min']}–{final['max']})" in row[column]
    rand = next(c for c in data["cells"] if c["policy"] == "random" and c["n_layer"] == 4)
    assert (f"ends on {pc.amount(rand['final']['published_storages']['mean'], 'storage')}"
            in text)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
