"""Baselines that map the front: static maps at every root count, untie-then-tie, and a
random agent for each action semantics (masked `random`, `random-unmasked`)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import agents
import tying_env  # noqa: F401  (registers the env ids)
from agents import schedules
from agents.base import OneEpisode
from agents.baselines import tie_map
from tying_env.errors import SettingError

# a few milliseconds per decision on one CPU core
FAST = dict(n_layer=12, max_sweeps=1, n_embd=16, n_head=2, seq_len=16, batch_size=4,
            eval_batches=1, steps_per_decision=1)
STATIC_NAMES = [f"static-{k}" for k in schedules.ROOTS]


class Recorder(gym.Wrapper):
    """Records (layer, sweep, mask, action) before every step, and the map after it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.records: list[tuple[int, int, np.ndarray, Any]] = []
        self.maps: list[tuple[int, ...]] = []

    def step(self, action: Any) -> Any:
        u = self.env.unwrapped
        self.records.append((u.layer, u.sweep, u.action_masks().copy(),
                             np.asarray(action).copy()))
        out = self.env.step(action)
        self.maps.append(tuple(out[-1]["tie_map"]))
        return out


def groups(ties: tuple[int, ...]) -> list[list[int]]:
    """The layers of each root, in order."""
    roots = sorted(set(ties))
    return [[i for i, r in enumerate(ties) if r == root] for root in roots]


# ------------------------------------------------------------------ static-K
@pytest.mark.parametrize("n_layer", [6, 7, 12, 13])
def test_contiguous_maps_have_k_roots_in_equal_contiguous_groups(n_layer):
    for k in range(1, n_layer + 1):
        ties = schedules.contiguous_map(n_layer, k)
        parts = groups(ties)
        assert len(parts) == k and sum(r == i for i, r in enumerate(ties)) == k
        for part in parts:  # contiguous, its first layer the root
            assert part == list(range(part[0], part[-1] + 1)) and ties[part[0]] == part[0]
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert ties == tie_map("sequence", n_layer, k)


def test_registered_static_variants_span_the_root_counts():
    assert agents.STATIC_ROOTS == schedules.STATIC_ROOTS
    assert len(schedules.ROOTS) >= 6 and (min(schedules.ROOTS), max(schedules.ROOTS)) == (1, 12)
    for name, k in schedules.STATIC_ROOTS.items():
        cls = agents.factory(name)
        assert cls.roots == k and cls.hyperparameters() == {}
        assert agents.fits(name, k) and not agents.fits(name, k - 1)
    assert agents.factory("agents.schedules:StaticRootsAgent").hyperparameters() == {"roots": 1}
    # aliases the docstrings state, at L = 12
    assert schedules.contiguous_map(12, 1) == tie_map("albert", 12)
    assert schedules.contiguous_map(12, 3) == tie_map("sequence", 12)
    assert schedules.contiguous_map(12, 6) == tie_map("paper-sequence", 12)
    assert schedules.contiguous_map(12, 12) == tie_map("vanilla", 12)
    assert schedules.contiguous_map(6, 3) == tie_map("paper-sequence", 6)


@pytest.mark.parametrize("mode", ["layer", "vector"])
def test_static_k_plays_exactly_k_roots_on_twelve_layers(make_env, mode):
    for name, k in schedules.STATIC_ROOTS.items():
        recorder = Recorder(make_env(action_mode=mode))
        agent = agents.make(name, OneEpisode(recorder), seed=0)
        agent.run()
        final = recorder.maps[-1]
        assert final == schedules.contiguous_map(12, k) == tuple(agent.ties), name
        assert len(groups(final)) == k
        assert agent.get_state()[1] == {"agent": name, "tie_map": list(final)}


def test_more_roots_than_layers_are_refused(make_env):
    env = make_env(n_layer=6)
    for name in ("static-8", "static-12"):
        with pytest.raises(SettingError, match=rf"roots={name[7:]} is not allowed for agent "
                                               rf"'{name}' on an environment of 6 layers; "
                                               r"allowed: an int from 1 to 6") as err:
            agents.make(name, env)
        assert err.value.argument == "roots"
    generic = "agents.schedules:StaticRootsAgent"
    assert agents.make(generic, env, roots=5).ties == (0, 0, 2, 3, 4, 5)
    for bad in (0, 7):
        with pytest.raises(SettingError, match=f"roots={bad} is not allowed"):
            agents.make(generic, env, roots=bad)
    with pytest.raises(SettingError, match="unknown hyperparameter"):
        agents.make("static-3", env, roots=2)  # the name fixes K


def test_a_run_reports_too_many_roots_as_a_bad_agent(tmp_path, cache_dir):
    from agents.runs.driver import run
    from agents.runs.spec import RunSpec

    spec = RunSpec(agent="static-8", env_kwargs={**FAST, "n_layer": 6}, out=tmp_path / "r",
                   cache_dir=cache_dir)
    with pytest.raises(SettingError, match="roots=8 is not allowed") as err:
        run(spec)
    assert err.value.argument == "agent"


def test_a_tracks_other_agents_leave_out_those_deeper_than_its_model():
    from agents.benchmark import tracks

    tiny = tracks.get("tiny")
    assert tracks.n_layer(tiny) == 6
    assert tiny.extra_agents == tracks.TINY_V1_EXTRAS  # history: its agents are fixed
    others = tracks._other_agents(6)
    assert {"static-1", "static-2", "static-4", "static-6", "untie-then-tie",
            "random-unmasked"} <= set(others)
    assert not {"static-8", "static-12"} & set(others)


# ------------------------------------------------------------------ untie-then-tie
def test_untie_then_tie_schedule_by_hand():
    assert schedules.untie_sweeps(10, 0.5) == 5
    assert schedules.untie_sweeps(5, 0.5) == 2
    assert schedules.untie_sweeps(10, 1.0) == 9  # the last sweep reaches the budget
    assert schedules.untie_sweeps(10, 0.0) == 0
    assert schedules.untie_sweeps(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004
    final = schedules.contiguous_map(12, 3)
    assert schedules.tie_order(final) == [1, 5, 9, 2, 6, 10, 3, 7, 11]
    maps = [schedules.untie_then_tie_map(12, 3, 10, 5, s) for s in range(10)]
    assert maps[:5] == [tuple(range(12))] * 5
    tied = [sum(r != i for i, r in enumerate(m)) for m in maps]
    assert tied == [0, 0, 0, 0, 0, 2, 4, 6, 8, 9]  # ceil(9 * d / 5)
    assert maps[-1] == final
    for before, after in zip(maps, maps[1:], strict=False):  # a tied layer stays tied
        assert all(after[i] == r for i, r in enumerate(before) if r != i)


def test_untie_then_tie_ends_at_the_budget_on_twelve_layers(make_env):
    def play(seed: int) -> Recorder:
        recorder = Recorder(make_env(max_sweeps=4))
        agent = agents.make("untie-then-tie", OneEpisode(recorder), seed=seed)
        assert agent.budget_roots == 3  # the paper's budget: 75% of 12 layers tied
        agent.run()
        return recorder

    recorder = play(0)
    assert len(recorder.records) == 4 * 11
    for (layer, sweep, mask, action), ties in zip(recorder.records, recorder.maps, strict=True):
        assert mask[int(action)]
        if sweep < 2:  # the first half: every layer trains its own weights
            assert int(action) == layer and ties[layer] == layer
    after_sweep = recorder.maps[10::11]
    assert after_sweep[:2] == [tuple(range(12))] * 2
    final = after_sweep[-1]
    roots = sum(r == i for i, r in enumerate(final))
    assert roots <= 3 and (12 - roots) / 12 >= 0.75
    assert final == schedules.contiguous_map(12, 3)
    assert [int(a) for *_, a in play(1).records] == [int(a) for *_, a in recorder.records]


def test_untie_then_tie_in_vector_mode_and_its_hyperparameters(make_env):
    recorder = Recorder(make_env(action_mode="vector", max_sweeps=4))
    agents.make("untie-then-tie", OneEpisode(recorder), budget_roots=2,
                untie_fraction=0.25).run()
    assert recorder.maps[0] == tuple(range(12))
    assert recorder.maps[-1] == schedules.contiguous_map(12, 2)
    env = make_env()
    for hparams, argument in (({"budget_roots": 13}, "budget_roots"),
                              ({"budget_roots": 0}, "budget_roots"),
                              ({"budget_roots": "3"}, "budget_roots"),
                              ({"untie_fraction": 1.5}, "untie_fraction")):
        with pytest.raises(SettingError, match=f"{argument}=.* is not allowed") as err:
            agents.make("untie-then-tie", env, **hparams)
        assert err.value.argument == argument
    assert agents.factory("untie-then-tie").hyperparameters() == {
        "budget_roots": None, "untie_fraction": 0.5}


# ------------------------------------------------------------------ random, masked or not
def test_random_is_masked_and_random_unmasked_is_not(make_env):
    def play(name: str, seed: int) -> list[tuple[int, np.ndarray, int]]:
        recorder = Recorder(make_env(n_layer=6, max_sweeps=6))
        agents.make(name, OneEpisode(recorder), seed=seed).run()
        return [(layer, mask, int(a)) for layer, _, mask, a in recorder.records]

    masked, unmasked = play("random", 0), play("random-unmasked", 0)
    assert all(mask[a] for _, mask, a in masked)  # never a masked action
    assert any(not mask[a] for _, mask, a in unmasked)  # indices > i: "independent" too
    assert all(0 <= a < 6 for *_, a in unmasked)
    for name in ("random", "random-unmasked"):  # deterministic per seed
        first = [a for *_, a in play(name, 3)]
        assert first == [a for *_, a in play(name, 3)] != [a for *_, a in play(name, 4)]


def test_random_unmasked_draws_uniformly_over_the_whole_space(make_env):
    env = OneEpisode(make_env(n_layer=6))
    agent = agents.make("random-unmasked", env, seed=0)
    obs, info = env.reset(seed=0)
    draws = np.array([agent.act(obs, info) for _ in range(3000)])  # layer 1
    independent = np.mean(draws >= 1)
    assert np.bincount(draws, minlength=6).min() > 400
    assert independent == pytest.approx(5 / 6, abs=0.03)  # random: 1 / 2
    tensors, meta = agent.get_state()
    other = agents.make("random-unmasked", env, seed=9)
    other.set_state(tensors, meta)
    assert other.act(obs, info) == agent.act(obs, info)
    with pytest.raises(ValueError, match="'random-unmasked'"):
        agents.make("random", env).set_state(tensors, meta)
