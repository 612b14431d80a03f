"""Agents: the paper's Q-learner, static baselines, SB3 adapters, on a tiny, fast env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents
import tying_env  # noqa: F401  (registers the env ids)
from agents.base import OneEpisode
from agents.baselines import tie_map
from agents.qlearning import (
    epsilon_after,
    greedy,
    n_outputs,
    random_choice,
    slice_of,
    td_target,
)
from tying_env import ties as tm

# a few milliseconds per decision on one CPU core
FAST = dict(n_layer=4, max_sweeps=2, n_embd=16, n_head=2, seq_len=16, batch_size=4,
            eval_batches=1, steps_per_decision=1)
SB3_NAMES = ["dqn", "ppo", "a2c", "maskable-ppo", "qrdqn", "recurrent-ppo"]
STATIC_NAMES = ["vanilla", "albert", "sequence", "cycle", "cycle-rev", "paper-sequence",
                "paper-reverse"]
ALL_NAMES = ["qlearning", "qlearning-plus", *STATIC_NAMES, "random", *SB3_NAMES]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


class Recorder(gym.Wrapper):
    """Records (layer, mask, action) before every step."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.records: list[tuple[int, np.ndarray, Any]] = []

    def step(self, action: Any) -> Any:
        u = self.env.unwrapped
        self.records.append((u.layer, u.action_masks().copy(), np.asarray(action).copy()))
        return self.env.step(action)


# ------------------------------------------------------------------ Q-learner, by hand
def test_slice_layout_for_four_layers():
    assert n_outputs(4) == 10
    assert [slice_of(i) for i in range(4)] == [slice(0, 1), slice(1, 3), slice(3, 6),
                                               slice(6, 10)]
    covered = [k for i in range(4) for k in range(10)[slice_of(i)]]
    assert covered == list(range(10))  # the slices partition the output


def test_greedy_picks_within_the_layer_slice():
    #            l0 | l1     | l2        | l3
    q = np.array([99, 0.0, 5.0, 1.0, 7.0, 2.0, 3.0, 4.0, 8.0, 6.0])
    assert greedy(q, 1) == 1  # index 1 of layer 1 = independent
    assert greedy(q, 2) == 1  # copy layer 1
    assert greedy(q, 3) == 2  # copy layer 2
    assert greedy(torch.tensor(q), 3) == 2
    assert greedy(np.zeros(10), 3) == 0  # ties go to the lowest index


def test_td_target_clips_and_uses_the_same_layer_slice():
    q_next = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 100.0])
    assert td_target(0.5, q_next, 2, 0.99) == pytest.approx(0.5 + 0.99 * 5.0)  # slice [3, 6)
    assert td_target(-63.7, q_next, 2, 0.99) == pytest.approx(-10.0 + 0.99 * 5.0)
    assert td_target(25.0, q_next, 1, 0.99) == pytest.approx(10.0 + 0.99 * 2.0)  # slice [1, 3)
    assert td_target(0.5, q_next, 3, 0.99) == pytest.approx(0.5 + 0.99 * 100.0)
    assert td_target(-3.0, q_next, 2, 0.5, clip=1.0) == pytest.approx(-1.0 + 0.5 * 5.0)


def test_epsilon_schedule_and_floor():
    assert epsilon_after(0) == 1.0
    assert epsilon_after(1) == pytest.approx(0.95)
    assert epsilon_after(2) == pytest.approx(0.9025)
    assert epsilon_after(10) == pytest.approx(0.598737, abs=1e-6)
    assert epsilon_after(89) == pytest.approx(0.010409, abs=1e-6)  # last one above the floor
    assert epsilon_after(90) == 0.01
    assert epsilon_after(1000) == 0.01


def test_random_choices_cover_exactly_the_valid_choices():
    rng = np.random.default_rng(0)
    for i in range(1, 4):
        draws = [random_choice(i, rng) for _ in range(600)]
        counts = np.bincount(draws)
        assert set(draws) == set(range(i + 1))  # copy 0..i-1 or independent (i), nothing else
        assert counts.min() > 0.7 * 600 / (i + 1)  # roughly uniform


# ------------------------------------------------------------------ Q-learner, on the env
def test_update_moves_q_toward_the_target(make_env):
    agent = agents.make("qlearning", make_env(), seed=0)
    s = np.array([0, 0, 0, 0], np.float32)
    s_next = np.array([0, 1, 0, 0], np.float32)
    index = slice_of(1).start + 1  # layer 1, independent
    before = agent.q_values(s)[index]
    target = td_target(0.3, agent.q_values(s_next), 1, 0.99)
    loss = agent.update(s, 1, 1, 0.3, s_next, 2)
    after = agent.q_values(s)[index]
    assert loss == pytest.approx((before - target) ** 2, rel=1e-5)
    assert abs(after - target) < abs(before - target)
    # an action >= the layer means independent: it trains the same output as action 1
    before, copy0 = agent.q_values(s)[index], agent.q_values(s)[index - 1]
    target = td_target(0.3, agent.q_values(s_next), 1, 0.99)
    loss = agent.update(s, 1, 3, 0.3, s_next, 2)
    assert loss == pytest.approx((before - target) ** 2, rel=1e-5)
    assert loss != pytest.approx((copy0 - target) ** 2, rel=1e-3)


def test_end_of_episode_bootstrap_switch(make_env):
    env = make_env()
    s, s_next = np.zeros(4, np.float32), np.array([0, 0, 2, 0], np.float32)
    faithful = agents.make("qlearning", env, seed=0)
    q_next = faithful.q_values(s_next)
    q = faithful.q_values(s)[slice_of(2).start + 2]
    loss = faithful.update(s, 2, 2, -50.0, s_next, 3, truncated=True)
    assert loss == pytest.approx((q - td_target(-50.0, q_next, 2, 0.99)) ** 2, rel=1e-5)
    no_end = agents.make("qlearning", env, seed=0, bootstrap_at_end=False)
    loss = no_end.update(s, 2, 2, -50.0, s_next, 3, truncated=True)
    assert loss == pytest.approx((q - (-10.0)) ** 2, rel=1e-5)


def test_plus_bootstraps_from_the_next_layer(make_env):
    agent = agents.make("qlearning-plus", make_env(), seed=0, learning_starts=1, batch_size=1)
    s, s_next = np.zeros(4, np.float32), np.array([0, 1, 0, 0], np.float32)
    q = agent.q_values(s)[slice_of(1).start + 1]
    target = td_target(0.2, agent.q_values(s_next), 2, 0.99)  # next layer's slice
    assert target != pytest.approx(td_target(0.2, agent.q_values(s_next), 1, 0.99))
    loss = agent.update(s, 1, 1, 0.2, s_next, 2)
    assert loss == pytest.approx((q - target) ** 2, rel=1e-5)
    loss = agent.update(s, 1, 1, 0.2, s_next, 2, terminated=True)  # diverged: no bootstrap
    assert len(agent.buffer) == 2 and agent.buffer.data["bootstrap"][:2].tolist() == [1.0, 0.0]


def test_qlearner_episode_is_seeded_and_leaves_global_rng_alone(make_env):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    runs = []
    for _ in range(2):
        env = Recorder(make_env())
        agent = agents.make("qlearning", env, seed=3)
        agent.run()
        actions = [int(a) for _, _, a in env.records]
        assert all(a <= layer for layer, _, a in env.records)  # never beyond "independent"
        runs.append((actions, agent.q_values(np.zeros(4, np.float32))))
        assert agent.sweeps == 2 and agent.epsilon == pytest.approx(epsilon_after(2))
        assert agent.decisions == env.unwrapped.budget == 6
        step = agent.optimizer.state_dict()["state"][0]["step"]
        assert float(step) == 6  # one TD step per decision
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_qlearners_refuse_vector_mode(make_env):
    for name in ("qlearning", "qlearning-plus"):
        with pytest.raises(ValueError, match="action_mode='layer'"):
            agents.make(name, make_env(action_mode="vector"))


@pytest.mark.parametrize("name", ["qlearning", "qlearning-plus"])
def test_qlearning_save_load_round_trip(make_env, tmp_path, name):
    agent = agents.make(name, make_env(), seed=0, **({"learning_starts": 2}
                                                     if name == "qlearning-plus" else {}))
    agent.run()
    agent.save(tmp_path / "agent")
    files = sorted(p.name for p in (tmp_path / "agent").iterdir())
    assert "qnet.safetensors" in files and "agent.json" in files
    assert not [f for f in files if f.endswith((".pt", ".pkl", ".pickle"))]

    other = agents.make(name, make_env(), seed=1, lr=0.5)
    probes = [np.array(t, np.float32) for t in ([0, 0, 0, 0], [0, 1, 2, 3], [0, 0, 2, 0])]
    assert not np.allclose(other.q_values(probes[0]), agent.q_values(probes[0]))
    other.load(tmp_path / "agent")
    for probe in probes:
        np.testing.assert_array_equal(other.q_values(probe), agent.q_values(probe))
    assert other.epsilon == agent.epsilon and other.sweeps == agent.sweeps == 2
    assert other.cfg == agent.cfg  # hyperparameters restored (lr=0.5 is gone)
    # the optimizer state and the RNG came back too: the next update is identical
    s, s_next = probes[0], probes[2]
    for a in (agent, other):
        a.update(s, 2, 0, 0.1, s_next, 3)
    np.testing.assert_array_equal(other.q_values(s), agent.q_values(s))
    assert other.rng.random() == agent.rng.random()


# ------------------------------------------------------------------ every agent
def test_registry_lists_every_agent():
    # other test modules may register agents of their own: ours must all be there
    assert set(ALL_NAMES) <= set(agents.names())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_agent_runs_one_episode_and_keeps_the_model(make_env, name):
    env = OneEpisode(make_env(**agents.env_settings(name)))
    agent = agents.make(name, env, seed=0)
    agent.run()
    u = env.unwrapped
    assert env.finished
    assert u.model is not None and u.decision == u.budget == 6
    assert u.run.optim.steps == 6 * FAST["steps_per_decision"]
    model = u.model
    obs, info = env.reset()  # answered from the finished episode, nothing is reset
    assert u.model is model and info["decision"] == 6 and info["sweep"] == 2
    with pytest.raises(RuntimeError, match="ended"):
        env.step(0)


@pytest.mark.parametrize("name", SB3_NAMES)
def test_sb3_agents_wrap_a_bare_env_and_can_reload(make_env, tmp_path, name):
    on_policy = {"n_steps": 4} | ({} if name == "a2c" else {"batch_size": 4})
    agent = agents.make(name, make_env(), seed=0, **({} if "dqn" in name else on_policy))
    assert isinstance(agent.env, OneEpisode)
    agent.run()
    assert agent.episode.finished and agent.model.num_timesteps == 6
    assert agent.model._n_updates > 0  # it learned during the episode
    with pytest.raises(RuntimeError, match="already ended"):
        agent.run()
    agent.save(tmp_path / name)
    files = sorted(p.name for p in (tmp_path / name).iterdir())
    assert "policy.safetensors" in files and "agent.json" in files
    assert all(f.endswith((".safetensors", ".json")) for f in files), files  # nothing pickled
    other = agents.make(name, make_env(), seed=1)
    other.load(tmp_path / name)
    for p, q in zip(agent.model.policy.parameters(), other.model.policy.parameters(),
                    strict=True):
        assert torch.equal(p, q)


def test_maskable_ppo_never_takes_a_masked_action(make_env):
    def play(name: str) -> list[tuple[int, np.ndarray, Any]]:
        recorder = Recorder(make_env(n_layer=6, max_sweeps=3))
        agent = agents.make(name, OneEpisode(recorder), seed=0, n_steps=4, batch_size=4)
        agent.run()
        assert len(recorder.records) == 15
        return recorder.records

    for layer, mask, action in play("maskable-ppo"):
        assert mask[int(action)], f"layer {layer}: masked action {action} taken"
        assert mask.tolist() == [j <= layer for j in range(6)]
    # the same check catches an agent that ignores the masks
    assert any(not mask[int(action)] for _, mask, action in play("ppo"))


def test_value_based_sb3_agents_refuse_vector_mode(make_env):
    for name in ("dqn", "qrdqn"):
        with pytest.raises(ValueError, match="Discrete"):
            agents.make(name, make_env(action_mode="vector"))


@pytest.mark.parametrize("name", ["ppo", "maskable-ppo", "random"])
def test_vector_mode_agents_play_valid_maps(make_env, name):
    recorder = Recorder(make_env(action_mode="vector", max_sweeps=3))
    agent = agents.make(name, OneEpisode(recorder), seed=0)
    agent.run()
    assert len(recorder.records) == 3
    for _, _, action in recorder.records:
        assert all(0 <= a <= i for i, a in enumerate(action.tolist()))


def test_random_agent_uses_the_masks_and_its_seed(make_env):
    def play(seed: int) -> list[int]:
        recorder = Recorder(make_env(n_layer=6, max_sweeps=3))
        agents.make("random", recorder, seed=seed).run()
        assert all(mask[int(a)] for _, mask, a in recorder.records)
        return [int(a) for _, _, a in recorder.records]

    assert play(0) == play(0)
    assert play(0) != play(1)


def test_random_agent_takes_its_choices_from_the_env_it_plays(make_env):
    """Built on one env, it follows the layer the played env's `info` names (sim-to-real)."""
    built = make_env(n_layer=6, max_sweeps=3)
    built.reset(seed=0)  # at layer 1: only choices 0 and 1 are valid there
    agent = agents.make("random", built, seed=0)
    draws = {agent.act(np.zeros(1), {"layer": 4}) for _ in range(200)}
    assert draws == {0, 1, 2, 3, 4}


# ------------------------------------------------------------------ static baselines
TABLES: dict[tuple[str, int, int | None], tuple[int, ...]] = {
    # L = 6, default n_unique = max(1, 6 // 4) = 1
    ("vanilla", 6, None): (0, 1, 2, 3, 4, 5),
    ("albert", 6, None): (0, 0, 0, 0, 0, 0),
    ("sequence", 6, None): (0, 0, 0, 0, 0, 0),
    ("cycle", 6, None): (0, 0, 0, 0, 0, 0),
    ("cycle-rev", 6, None): (0, 0, 0, 0, 0, 0),
    ("paper-sequence", 6, None): (0, 0, 2, 2, 4, 4),
    ("paper-reverse", 6, None): (0, 1, 2, 2, 1, 0),
    ("sequence", 6, 2): (0, 0, 0, 3, 3, 3),
    ("cycle", 6, 2): (0, 1, 0, 1, 0, 1),
    ("cycle-rev", 6, 2): (0, 1, 0, 1, 1, 0),
    ("sequence", 6, 3): (0, 0, 2, 2, 4, 4),
    ("cycle", 6, 3): (0, 1, 2, 0, 1, 2),
    ("cycle-rev", 6, 3): (0, 1, 2, 2, 1, 0),
    ("sequence", 6, 4): (0, 0, 2, 2, 4, 5),  # blocks 0 0 1 1 2 3
    ("cycle", 6, 4): (0, 1, 2, 3, 0, 1),
    ("cycle-rev", 6, 4): (0, 1, 2, 3, 1, 0),  # blocks 0 1 3 2 1 0
    # L = 7, n_unique = 3 (the docstring's examples)
    ("sequence", 7, 3): (0, 0, 0, 3, 3, 5, 5),
    ("cycle", 7, 3): (0, 1, 2, 0, 1, 2, 0),
    ("cycle-rev", 7, 3): (0, 1, 2, 0, 2, 1, 0),
    # L = 12, default n_unique = 3
    ("vanilla", 12, None): (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11),
    ("albert", 12, None): (0,) * 12,
    ("sequence", 12, None): (0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8),
    ("cycle", 12, None): (0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2),
    ("cycle-rev", 12, None): (0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 1, 0),
    ("paper-sequence", 12, None): (0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10),
    ("paper-reverse", 12, None): (0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0),
    ("sequence", 12, 4): (0, 0, 0, 3, 3, 3, 6, 6, 6, 9, 9, 9),
    ("cycle-rev", 12, 4): (0, 1, 2, 3, 0, 1, 2, 3, 3, 2, 1, 0),
}


@pytest.mark.parametrize(("name", "n_layer", "n_unique"), list(TABLES))
def test_tie_map_tables(name, n_layer, n_unique):
    expected = TABLES[name, n_layer, n_unique]
    assert tie_map(name, n_layer, n_unique) == expected
    assert tm.validate(expected) == expected


def test_tie_map_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        tie_map("random", 6)
    with pytest.raises(ValueError, match="n_unique applies"):
        tie_map("albert", 6, n_unique=2)
    with pytest.raises(ValueError, match="n_unique=7"):
        tie_map("cycle", 6, n_unique=7)


ENV_CASES = [(name, L, n_unique) for (name, L, n_unique) in TABLES
             if L in (6, 12) and (n_unique is not None or name in STATIC_NAMES)]


@pytest.mark.parametrize("mode", ["layer", "vector"])
@pytest.mark.parametrize(("name", "n_layer", "n_unique"), ENV_CASES)
def test_static_agents_reach_exactly_their_map(make_env, mode, name, n_layer, n_unique):
    # L = 12 starts from all-independent blocks, L = 6 from the published all-copies start
    env = OneEpisode(make_env(n_layer=n_layer, action_mode=mode,
                              max_sweeps=2 if n_layer == 6 else 1,
                              **{"initial_ties": "first" if n_layer == 6 else "none",
                                 **agents.env_settings(name)}))
    kwargs = {} if n_unique is None else {"n_unique": n_unique}
    agent = agents.make(name, env, seed=0, **kwargs)
    maps = []
    obs, info = env.reset(seed=0)
    while not env.finished:
        obs, _, _, _, info = env.step(agent.act(obs, info))
        if info["layer"] == 1:
            maps.append(tuple(info["tie_map"]))  # after every full sweep
    assert maps and all(m == TABLES[name, n_layer, n_unique] for m in maps)
    assert tuple(info["tie_map"]) == TABLES[name, n_layer, n_unique]


def _cosine_to_block0(env: gym.Env) -> list[float]:
    model = env.unwrapped.model
    first = model.block(0).mlp.c_fc.weight.detach().flatten()
    return [float(torch.nn.functional.cosine_similarity(
        model.block(i).mlp.c_fc.weight.detach().flatten(), first, dim=0)) for i in range(1, 4)]


def test_vanilla_is_conventional_training_and_untie_all_is_not(make_env):
    """`vanilla` trains independently initialised blocks; `untie-all` clones block 0."""
    assert agents.env_settings("vanilla") == {"initial_ties": "none"}
    assert agents.env_settings("untie-all") == {} == agents.env_settings("albert")
    with pytest.raises(ValueError, match="initial_ties='first'"):
        agents.make("vanilla", make_env(initial_ties="first"))
    similarity = {}
    for name, start in (("vanilla", "none"), ("untie-all", "first")):
        env = OneEpisode(make_env(initial_ties=start, max_sweeps=1))
        agent = agents.make(name, env, seed=0)
        agent.run()
        assert env.unwrapped.model.ties == (0, 1, 2, 3) and agent.name == name
        similarity[name] = _cosine_to_block0(env)
    assert all(abs(c) < 0.2 for c in similarity["vanilla"])
    assert all(c > 0.9 for c in similarity["untie-all"])


def test_run_records_the_settings_vanilla_requires(tmp_path):
    from agents.runs.spec import RunSpec

    spec = RunSpec(agent="vanilla", env_kwargs={"initial_ties": "first"}, out=tmp_path)
    assert spec.settings()["env_kwargs"]["initial_ties"] == "none"
    assert spec.to_run_file()["settings"]["env_kwargs"]["initial_ties"] == "none"
    assert RunSpec(agent="untie-all").env_config()["initial_ties"] == "first"


def test_an_unregistered_agent_class_runs_by_its_import_path(make_env):
    agent = agents.make("agents.baselines:RandomAgent", OneEpisode(make_env()), seed=3)
    agent.run()
    assert agent.name == "random"
    with pytest.raises(ValueError, match="cannot be imported"):
        agents.make("agents.baselines:NoSuchAgent", make_env())
    with pytest.raises(ValueError, match="package.module:ClassName"):
        agents.make("no-such-agent", make_env())


# ------------------------------------------------------------------ the agent contract
def test_every_registered_class_declares_its_name_and_hyperparameters():
    from agents.base import Agent

    for name in agents.names():
        cls = agents.factory(name)
        assert issubclass(cls, Agent) and cls.name == name
        assert isinstance(cls.hyperparameters(), dict)
    assert agents.factory("qlearning-fast").hyperparameters()["epsilon_decay"] == 0.6
    assert agents.factory("cycle").hyperparameters() == {"n_unique": None}
    assert "n_steps" in agents.factory("ppo").hyperparameters()


def test_registering_needs_a_declared_unique_name():
    from agents.base import Agent

    class Nameless(Agent):
        pass

    class Named(Agent):
        name = "test-named"

    with pytest.raises(ValueError, match="declares no name"):
        agents.register(Nameless)
    with pytest.raises(ValueError, match="already registered"):
        agents.register("qlearning", "agents.qlearning:QLearningPlusAgent")
    with pytest.raises(ValueError, match="declares name='test-named'"):
        agents.register("other", Named)
    assert agents.register(Named) == "test-named"
    try:
        with pytest.raises(ValueError, match="already registered"):
            agents.register(Named)
    finally:
        agents.unregister("test-named")
    agents.register("test-lazy", "agents.qlearning:QLearningPlusAgent")
    try:  # a lazy class is checked when it is imported
        with pytest.raises(ValueError, match="declares name='qlearning-plus'"):
            agents.factory("test-lazy")
    finally:
        agents.unregister("test-lazy")


@pytest.mark.parametrize(("name", "hparams", "argument", "words"), [
    ("qlearning", {"epsilon_decy": 0.5}, "epsilon_decy",
     ["epsilon_decy=0.5", "did you mean epsilon_decay?", "allowed: bootstrap_at_end"]),
    ("qlearning", {"lr": float("nan")}, "lr", ["lr=nan", "a finite number"]),
    ("qlearning-plus", {"learning_starts": True}, "learning_starts", ["an int"]),
    ("ppo", {"n_stepz": 4}, "n_stepz", ["did you mean n_steps?"]),
    ("ppo", {"normalize_advantage": 1}, "normalize_advantage", ["a bool"]),
    ("albert", {"n_unique": 2}, "n_unique", ["'albert'", "allowed: none"]),
])
def test_one_check_refuses_bad_hyperparameters(make_env, name, hparams, argument, words):
    from tying_env.errors import SettingTypeError

    with pytest.raises(SettingTypeError) as error:
        agents.make(name, make_env(), seed=0, **hparams)
    assert error.value.argument == argument
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_an_agent_that_cannot_checkpoint_still_runs(make_env, capsys):
    from contextlib import nullcontext

    from agents.base import Agent
    from agents.runs.driver import drive

    class Once(Agent):
        name = "test-once"
        checkpoints = False

        def run(self) -> None:  # no on_boundary
            self.ran = True

    class Checkpointer:
        every = 5
        calls: list[str] = []

        def stop_on_signals(self) -> Any:
            self.calls.append("signals")
            return nullcontext()

        def __call__(self) -> None:
            self.calls.append("boundary")

    once = Once(make_env())
    drive(once, Checkpointer())
    assert once.ran and Checkpointer.calls == []
    assert "offers no checkpoint boundaries" in capsys.readouterr().err
    static = agents.make("albert", OneEpisode(make_env(max_sweeps=1)), seed=0)
    drive(static, Checkpointer())
    assert Checkpointer.calls[0] == "signals" and "boundary" in Checkpointer.calls
