"""The surrogate track: logged transitions, the fitted ensemble, and the emulated env."""

import json
import math

import numpy as np
import pytest
from conftest import SMALL_BENCHMARK_AGENTS, SMALL_BENCHMARK_ENV

import agents
from agents import OneEpisode
from agents.surrogate.fit import FitSettings, fit
from agents.surrogate.transitions import Transitions, collect, family_of
from tying_env.env import LayerTyingEnv
from tying_env.surrogate.env import SurrogateEnv
from tying_env.surrogate.features import feature_names
from tying_env.surrogate.model import Ensemble

ENV_KWARGS = SMALL_BENCHMARK_ENV


@pytest.fixture(scope="module")
def logged(small_benchmark):
    """Real episodes of three behaviour policies (the small benchmark), as transitions."""
    return small_benchmark, collect([small_benchmark])


@pytest.fixture(scope="module")
def model(logged, tmp_path_factory):
    """A small ensemble fitted on them, saved and loaded back as the env reads it."""
    out, data = logged
    ensemble = fit(data, FitSettings(members=3, hidden=16, epochs=3))
    settings = {"preset": "tiny", "dataset": "synthetic", **ENV_KWARGS}
    ensemble.meta |= {"env_settings": settings,
                      "optimal_ppl": data.episodes[0]["optimal_ppl"]}
    path = tmp_path_factory.mktemp("model") / "tiny-test"
    ensemble.save(path)
    return path


def test_transitions_are_the_logged_episodes(logged):
    out, data = logged
    assert [e["agent"] for e in data.episodes] == sorted(SMALL_BENCHMARK_AGENTS)
    assert {family_of(e["agent"]) for e in data.episodes} == {"qlearning", "random", "static"}
    budget = ENV_KWARGS["max_sweeps"] * (ENV_KWARGS["n_layer"] - 1)
    assert data.x.shape == (3 * budget, len(feature_names(4)))
    for k, e in enumerate(data.episodes):
        rows = data.episode == k
        # the changes add up to the logged loss path, and the rewards to the return
        assert math.isclose(e["initial_val_loss"] + data.delta[rows].sum(), e["last_val_loss"],
                            abs_tol=1e-9)
        log = [json.loads(line) for line in
               (out / "cells" / f"{e['agent']}-s{e['seed']}" / "log.jsonl").open()]
        penalty = [ENV_KWARGS["param_penalty"] * r["trainable_fraction"] for r in log]
        assert np.allclose(-data.delta[rows] - penalty, [r["reward"] for r in log])
    # the version of a data set is its content
    assert data.content_hash == collect([out]).content_hash
    keep = np.array([e["agent"] != "vanilla" for e in data.episodes])
    part = data.select(keep)
    assert len(part.episodes) == 2 and set(part.episode) == {0, 1}
    assert part.content_hash != data.content_hash


def test_saved_data_and_model_read_back_equal(logged, model, tmp_path):
    _, data = logged
    path = data.save(tmp_path / "data.npz")
    again = Transitions.load(path)
    assert again.content_hash == data.content_hash and again.episodes == data.episodes
    ensemble = Ensemble.load(model)
    means, variances = ensemble.predict(data.x[:5])
    assert means.shape == (3, 5) and (variances > 0).all()
    assert ensemble.meta["data_sha256"] == data.content_hash
    # one decision at a time gives what a batch gives
    one, _ = ensemble.predict(data.x[2])
    assert np.allclose(one, means[:, 2])


def test_the_change_reverts_towards_the_level_of_the_schedule(logged, model):
    """The mean change is mu + kappa * (level - (val_loss + mu)), the level from the
    features that see no loss and the logged mean loss at the decision; kappa per tenth of
    the episode lies in [0, 1]; the level travels with the saved model."""
    import dataclasses

    from agents.surrogate.fit import fit_level
    from tying_env.surrogate.features import LOSS_FEATURES
    from tying_env.surrogate.model import LEVEL, mlp

    _, data = logged
    ensemble = Ensemble.load(model)
    level = ensemble.level
    names = feature_names(ENV_KWARGS["n_layer"])
    assert [names[k] for k in level.columns] == [n for n in names if n not in LOSS_FEATURES]
    assert len(level.kappa) == 10 and all(0.0 <= k <= 1.0 for k in level.kappa)
    budget = len(level.ref)
    assert budget == ENV_KWARGS["max_sweeps"] * (ENV_KWARGS["n_layer"] - 1)
    x = data.x[:7]
    means, variances = ensemble.predict(x)
    plain = dataclasses.replace(ensemble, level=None)
    mu, plain_var = plain.predict(x)
    assert np.array_equal(variances, plain_var)
    z = (x[:, level.columns] - level.x_mean) / level.x_std
    decision = np.rint(x[:, 0] * budget).astype(int)
    lv = mlp(z, ensemble.weights, LEVEL)[..., 0] * level.y_std + level.y_mean + level.ref[
        decision]
    kappa = np.array(level.kappa)[(x[:, 0] * 10).astype(int)]
    loss = x[:, names.index("val_loss")]
    assert np.allclose(means, mu + kappa * (lv - loss - mu), rtol=0, atol=1e-12)
    # the logged mean loss after each decision is the level's reference
    after = data.x[:, names.index("val_loss")] + data.delta
    first = np.rint(data.x[:, 0] * budget).astype(int) == 0
    assert math.isclose(level.ref[0], after[first].mean(), rel_tol=1e-6)
    # episodes of different lengths are not one track's
    short = data.select(np.array([True, False, False]))
    short.x, short.delta, short.episode = short.x[:-1], short.delta[:-1], short.episode[:-1]
    mixed = Transitions(np.concatenate([short.x, data.x]), np.concatenate(
        [short.delta, data.delta]), np.concatenate([short.episode, data.episode + 1]),
        [*short.episodes, *data.episodes])
    with pytest.raises(ValueError, match="episodes of .* decisions"):
        fit_level(mixed, [np.arange(len(mixed.delta))], FitSettings(members=1, epochs=1))


def test_exact_parts_equal_the_real_environment(model, cache_dir):
    """Spaces, masks, budget, tie maps, parameter counts, memory, lr and steps: computed as
    the real environment computes them, for the same actions."""
    sur = SurrogateEnv(model)
    real = LayerTyingEnv("tiny", dataset="synthetic", cache_dir=cache_dir, **ENV_KWARGS)
    assert sur.action_space == real.action_space
    assert sur.observation_space == real.observation_space
    obs_s, info_s = sur.reset(seed=3)
    obs_r, info_r = real.reset(seed=3)
    assert set(info_r) <= set(info_s) and sur.budget == real.budget
    rng = np.random.default_rng(0)
    exact = ("tie_map", "layer", "sweep", "decision", "budget", "trainable_params",
             "total_params", "trainable_fraction", "train_steps", "lr", "changed", "choices",
             "optimal_ppl")
    done, loss = False, info_s["val_loss"]
    while not done:
        assert (sur.action_masks() == real.action_masks()).all()
        action = int(rng.integers(sur.layer + 1))
        obs_s, reward_s, _, trunc_s, info_s = sur.step(action)
        obs_r, reward_r, _, trunc_r, info_r = real.step(action)
        for key in exact:
            assert info_s[key] == info_r[key], key
        assert info_s["memory_bytes"] == info_r["memory_bytes"]
        n = 2 * ENV_KWARGS["n_layer"]
        assert (obs_s[:n] == obs_r[:n]).all() and obs_s[-1] == obs_r[-1]
        # the reward as the real env computes it, from the emulated losses
        penalty = ENV_KWARGS["param_penalty"] * info_s["trainable_fraction"]
        assert math.isclose(reward_s, loss - info_s["val_loss"] - penalty, abs_tol=1e-12)
        assert obs_s[-2] == np.float32(info_s["val_loss"])
        loss = info_s["val_loss"]
        assert trunc_s == trunc_r
        done = trunc_s
    real.close()


def test_every_agent_runs_unchanged_and_seeds_reproduce(model):
    layers = ENV_KWARGS["n_layer"]
    for name in [a for a in agents.names() if agents.fits(a, layers)]:
        start = agents.env_settings(name).get("initial_ties")
        env = SurrogateEnv(model, initial_ties=start)
        agents.make(name, OneEpisode(env), seed=0).run()
        assert env.decision == env.budget, name
    runs = []
    for _ in range(2):
        env = SurrogateEnv(model)
        env.reset(seed=5)
        losses = [env.step(int(env.layer))[4]["val_loss"] for _ in range(env.budget)]
        runs.append(losses)
    assert runs[0] == runs[1]


def test_out_of_data_decisions_are_flagged(model):
    env = SurrogateEnv(model)
    _, info = env.reset(seed=0)
    assert info["surrogate_ood_steps"] == 0
    env.ensemble.meta["ood_threshold"] = -1.0  # every decision is outside
    _, _, _, _, info = env.step(1)
    assert info["surrogate_ood"] and info["surrogate_ood_steps"] == 1
    assert info["surrogate_disagreement"] >= 0


def test_an_episode_can_run_a_chosen_member(model):
    """`reset(options={"member": k})` runs member k; the seed's draws stay the same, so
    members are compared on one noise, and a bad member names the value."""
    env = SurrogateEnv(model)
    paths = {}
    for member in (0, 1, 1):
        _, info = env.reset(seed=4, options={"member": member})
        assert info["surrogate_member"] == member
        paths.setdefault(member, []).append(
            [env.step(int(env.layer))[4]["val_loss"] for _ in range(6)])
    assert paths[1][0] == paths[1][1] and paths[0][0] != paths[1][0]
    drawn = env.reset(seed=4)[1]["surrogate_member"]
    assert env.reset(seed=4, options={"member": drawn})[0].tolist() == env.reset(
        seed=4)[0].tolist()
    for bad in (3, -1, True, "1"):
        with pytest.raises(ValueError, match=rf"options\['member'\]={bad!r} .*0\.\.2"):
            env.reset(seed=0, options={"member": bad})


def test_member_spread_plays_each_member_beside_the_real_seed_sd(model):
    from agents.surrogate.validate import member_spread, play

    real = {"vanilla": [{"seed": 0, "last_val_ppl": 10.0}, {"seed": 1, "last_val_ppl": 10.4}],
            "random": [{"seed": 0, "last_val_ppl": 11.0}]}  # one seed: no sd, left out
    spread = member_spread(model, real, ["vanilla", "random"], seeds=(0, 1))
    assert list(spread) == ["vanilla"]
    row = spread["vanilla"]
    assert math.isclose(row["real_seed_sd"], 0.4 / math.sqrt(2))
    by_hand = [np.mean([r["last_val_ppl"] for r in play(model, "vanilla", (0, 1), member=m)])
               for m in range(3)]
    assert row["member_last_val_ppl"] == pytest.approx(by_hand, rel=0, abs=0)
    assert math.isclose(row["member_sd"], float(np.std(by_hand, ddof=1)))
    from agents.surrogate.page import member_lines

    lines = member_lines(spread)
    assert any(line.startswith("| `vanilla` | ") and f"{row['member_sd']:.3f}" in line
               for line in lines)
    assert member_lines({}) == []
    from agents.surrogate.page import _gap

    assert (_gap(1.004), _gap(-0.99), _gap(None)) == ("**1.00**", "-0.99", "—")


def test_bad_settings_name_the_value(model, tmp_path):
    with pytest.raises(ValueError, match="model='nope'.*allowed: deep-v1"):
        SurrogateEnv("nope")
    with pytest.raises(ValueError, match="initial_ties='frozen' is not emulated"):
        SurrogateEnv(model, initial_ties="frozen")
    env = SurrogateEnv(model)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(7)
    # a model fitted on features this version no longer computes is refused
    old = tmp_path / "old"
    old.with_suffix(".safetensors").write_bytes(model.with_suffix(".safetensors").read_bytes())
    meta = json.loads(model.with_suffix(".json").read_text())
    old.with_suffix(".json").write_text(json.dumps({**meta, "features": meta["features"][:10]}))
    with pytest.raises(ValueError, match="fitted on the features .*refit it"):
        SurrogateEnv(old)


def test_validation_runs_every_check_on_real_episodes(logged, tmp_path, monkeypatch,
                                                       cache_dir):
    """The report has each check of docs/surrogate.md, computed on the small benchmark
    (one seed: nothing to hold out, so the one-step check uses every episode)."""
    from agents.benchmark.tracks import TRACKS, Track
    from agents.surrogate import validate as check

    _, data = logged
    track = Track(name="small", version=1, env_id="LayerTying-GPT2-Tiny-v0",
                  env_kwargs={**ENV_KWARGS, "device": "cpu"}, seeds=(0,),
                  agents=SMALL_BENCHMARK_AGENTS, description="the small benchmark")
    monkeypatch.setitem(TRACKS, "small", track)
    report = check.validate(data, "small", holdout=(), work=tmp_path, seeds=(0, 1),
                            settings=FitSettings(members=2, hidden=8, epochs=1),
                            cache_dir=cache_dir)
    assert report["one_step"]["decisions"] == 0  # no held-out seed
    assert set(report["per_agent"]) == set(SMALL_BENCHMARK_AGENTS)
    for row in report["per_agent"].values():
        assert row["real_seeds"] == 1 and math.isfinite(row["surrogate_return"])
    assert report["ranking"]["agents"] == 3 and -1 <= report["ranking"]["tau_b"] <= 1
    assert set(report["left_out"]) == {"qlearning", "random", "static"}
    assert report["left_out"]["static"]["ranks"]["vanilla"]["real"] in (1, 2, 3)
    assert report["speed"]["speedup"] > 1 and report["speed"]["real_decisions"] == 22
    versus = report["reference_vs_random"]
    assert (versus["reference"], versus["random"]) == ("qlearning", "random")
    assert versus["real"]["pairs"] == 1 and versus["real"]["p"] is None and versus["met"]
    # the page states each check's verdict; one seed per agent: no seed sd, no decided pair
    from agents.surrogate.page import render

    page = render(report, "runs/validation.json")
    assert ("Every agent within one real seed standard deviation (a gap beyond it in bold): "
            "not measurable.") in page
    assert "Pairs the real runs decide (95% intervals apart): 0;" in page
    assert "| vanilla |" not in page and "| `vanilla` |" in page
    assert "The surrogate says it beats random only if the real track does: met." in page
    assert "Every family left out fairly:" in page
    assert report["members"] == {}  # one real seed: no seed sd to set the members against
    assert "seed sd of last ppl: real, surrogate" in page
    row = report["per_agent"]["vanilla"]
    assert row["real_ppl_sd"] is None and row["surrogate_ppl_sd"] > 0


def test_one_step_error_by_hand_split_by_whether_the_tie_map_changed():
    from agents.surrogate.transitions import Transitions
    from agents.surrogate.validate import one_step
    from tying_env.surrogate.features import FEATURES

    x = np.zeros((4, len(FEATURES)))
    x[:2, FEATURES.index("changed")] = 1.0
    held_out = Transitions(x, np.array([0.3, -0.3, 0.1, 0.0]), np.zeros(4, int), [{}])

    class Ensemble:  # one member predicting 0 with variance 0.01 (sd 0.1)
        def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros((1, len(rows))), np.full((1, len(rows)), 0.01)

    report = one_step(Ensemble(), held_out, {"train_noise_std": 0.1})
    changed, kept = report["by_change"]["changed"], report["by_change"]["kept"]
    assert changed["decisions"] == 2 and math.isclose(changed["rmse"], 0.3)
    assert kept["decisions"] == 2 and math.isclose(kept["rmse"], math.sqrt(0.005))
    assert changed["within_replicate"] is False and kept["within_replicate"] is True
    # intervals: 50% is +-0.067, 90% is +-0.164 around 0
    assert kept["coverage_50"] == 0.5 and kept["coverage_90"] == 1.0
    assert changed["coverage_90"] == 0.0


def test_replicate_error_adds_evaluation_noise_and_averages_variances():
    """sqrt(2 * mean(train^2 + eval^2)) over a phase's points, the evaluation noise at the
    track's size; without points, sqrt(2) times the file's training noise."""
    from agents.surrogate.validate import replicate_rmse

    rows = [{"phase": 0.1, "train_noise_std": 0.3, "eval_noise_std": {"4": 9.0, "16": 0.4}},
            {"phase": 0.1, "train_noise_std": 0.0, "eval_noise_std": {"4": 9.0, "16": 0.0}},
            {"phase": 0.9, "train_noise_std": 0.1, "eval_noise_std": {"4": 9.0, "16": None}}]
    noise = {"track_eval_batches": 16, "rows": rows, "train_noise_std": 7.0,
             "per_phase": {"0.1": {}, "0.9": {}}}
    assert math.isclose(replicate_rmse(noise, "0.1"), math.sqrt(2 * (0.25 + 0.0) / 2))
    assert math.isclose(replicate_rmse(noise, "0.9"), math.sqrt(2) * 0.1)
    assert math.isclose(replicate_rmse(noise), math.sqrt(2 * (0.25 + 0.01) / 3))
    assert math.isclose(replicate_rmse({"train_noise_std": 0.2}), math.sqrt(2) * 0.2)
    assert replicate_rmse({}) is None


def test_lineage_counts_how_long_two_weight_vectors_trained_apart():
    from tying_env.surrogate.features import Lineage

    lineage = Lineage((0, 0, 0, 0))  # the copy start: one vector
    assert lineage.decide(1, (0, 0, 0, 0), (0, 1, 0, 0), now=0) == 0  # untie: a clone
    # layer 1 trained on its own since 0, then runs block 0 again
    assert lineage.decide(1, (0, 1, 0, 0), (0, 0, 0, 0), now=5) == 5
    assert lineage.decide(2, (0, 0, 0, 0), (0, 0, 2, 0), now=6) == 0
    assert lineage.decide(3, (0, 0, 2, 0), (0, 0, 2, 3), now=8) == 0
    # 3 and 2 are clones of block 0 born at 8 and 6: apart since 6
    assert lineage.decide(3, (0, 0, 2, 3), (0, 0, 2, 2), now=10) == 4
    # a root others run is tied: its heir keeps its vector, so 3 runs what it ran
    assert lineage.decide(2, (0, 0, 2, 2), (0, 0, 0, 3), now=12) == 12 - 6
    assert lineage.decide(3, (0, 0, 0, 3), (0, 0, 0, 3), now=13) == 0
    assert lineage.decide(3, (0, 0, 0, 3), (0, 0, 0, 0), now=14) == 14 - 6


def test_history_features_follow_the_episode():
    from tying_env.surrogate.features import FEATURES, History

    history = History(n_layer=4, budget=6, ties=(0, 0, 0, 0), val_loss=2.0)
    x = history.features(1, (0, 1, 0, 0))
    f = dict(zip(FEATURES, x, strict=False))
    assert (f["progress"], f["changed"], f["own"], f["last_delta"], f["jump"]) == (
        0, 1, 1, 0, 0)
    for loss in (1.5, 1.7, 1.6):
        history.observe(loss)
        x = history.features(1, (0, 1, 0, 0))
    history.observe(1.4)
    f = dict(zip(FEATURES, history.features(1, (0, 0, 0, 0)), strict=False))
    assert math.isclose(f["last_delta"], -0.2) and math.isclose(f["delta_2"], -0.1)
    assert math.isclose(f["delta_3"], 0.2)
    assert math.isclose(f["sweep_delta"], 0.2 - 0.1 - 0.2)  # a sweep: L - 1 = 3 decisions
    assert math.isclose(f["above_best"], 0.0) and math.isclose(f["jump"], 4 / 6)
    assert math.isclose(f["since_change"], 0.0) and f["progress"] == 4 / 6
    assert history.deltas == pytest.approx([-0.5, 0.2, -0.1, -0.2])


def test_beats_is_a_paired_one_sided_signed_rank_test():
    from agents.surrogate.validate import beats

    better = {s: 1.0 + 0.1 * s for s in range(8)}
    worse = {s: 0.5 for s in range(8)}
    found = beats(better, worse)
    # 8 positive differences: the smallest exact one-sided p, 1 / 2^8
    assert found["beats"] and math.isclose(found["p"], 1 / 256)
    assert math.isclose(found["mean_difference"], 0.85) and found["pairs"] == 8
    assert not beats(worse, better)["beats"]
    assert beats({0: 1.0, 9: 2.0}, {0: 0.0})["pairs"] == 1  # only shared seeds pair


def test_ranking_statistics_by_hand():
    from agents.surrogate.validate import halves_tau, rank_of, ranking

    real = {"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9], "c": [2.05, 1.95, 2.0]}
    same = ranking(real, {"a": 0.0, "b": 1.0, "c": 0.9})
    # real means 1.0 < 2.0 = 2.0 (b and c tie): tau_b of (1,2,2) vs (0,1,0.9) is 2/sqrt(6)
    assert math.isclose(same["tau_b"], 2 / math.sqrt(6))
    # a is decided against b and c; b-c overlap and do not count
    assert same["decided_pairs"] == 2 and same["decided_agreement"] == 1.0
    flipped = ranking(real, {"a": 3.0, "b": 1.0, "c": 0.9})
    assert flipped["decided_agreement"] == 0.0
    assert rank_of({"a": 1.0, "b": 3.0, "c": 2.0}, "c") == 2
    rows = {n: [{"seed": s, "return": v} for s, v in enumerate(values)]
            for n, values in {"a": [1, 1], "b": [2, 2], "c": [3, 3]}.items()}
    assert halves_tau(rows) == 1.0


def test_the_shipped_deep_surrogate_is_registered_and_matches_the_track(cache_dir):
    """`gym.make` of the surrogate id works offline from the model in the package, with the
    real deep track's spaces, budget and data hash recorded."""
    import gymnasium as gym

    from agents.benchmark.tracks import get
    from tying_env import ENV_IDS, SURROGATE_IDS

    track = get("deep")
    env = gym.make("LayerTying-Surrogate-Deep-v0")
    meta = env.unwrapped.ensemble.meta
    assert SURROGATE_IDS["LayerTying-Surrogate-Deep-v0"] == "deep-v1"
    assert meta["track"] == track.label and len(meta["data_sha256"]) == 64
    real = LayerTyingEnv(**{**ENV_IDS[track.env_id], **track.env_kwargs}, cache_dir=cache_dir)
    assert env.observation_space == real.observation_space
    assert env.action_space == real.action_space
    _, info = env.reset(seed=0)
    assert info["budget"] == real.budget == 352
    assert info["total_params"] == real.reset(seed=0)[1]["total_params"]
    real.close()
    # Gymnasium's checker (spaces, seeding, determinism); its one warning, as for the real
    # env: the validation loss's observation bound is infinite
    from gymnasium.utils.env_checker import check_env

    with pytest.warns(UserWarning, match="maximum value is infinity"):
        check_env(env.unwrapped, skip_render_check=True)


@pytest.fixture
def registered(model):
    """The small model registered as a Gymnasium id, for the duration of a test."""
    import gymnasium as gym

    env_id = "Test-Surrogate-Small-v0"
    gym.register(id=env_id, entry_point="tying_env.surrogate.env:SurrogateEnv",
                 kwargs={"model": str(model)})
    yield env_id
    del gym.registry[env_id]


def test_sim_to_real_trains_on_the_surrogate_and_evaluates_for_real(registered, model,
                                                                   tmp_path, cache_dir):
    from agents.runs.driver import run
    from agents.runs.spec import RunSpec

    spec = RunSpec(agent="qlearning", env_kwargs=ENV_KWARGS, seed=0, out=tmp_path / "run",
                   cache_dir=cache_dir, progress=False, train_episodes=2, eval_episodes=1,
                   train_env_id=registered)
    result = run(spec.check())
    assert result.train_env_id == registered and len(result.train) == 2
    # the surrogate's model is named: its weights and sidecar, hashed
    import hashlib

    files = b"".join(model.with_suffix(x).read_bytes() for x in (".safetensors", ".json"))
    assert result.train_env_model == hashlib.sha256(files).hexdigest()
    # the training episodes ran on the surrogate (its info has no real training loss), the
    # evaluation on the real environment (full-split perplexities)
    assert all(math.isfinite(e["final_val_ppl"]) for e in result.eval)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["settings"]["train_env_id"] == registered
    assert RunSpec.from_folder(tmp_path / "run", resume=False).train_env_id == registered
    # an agent that reads masks plays the evaluation env's (not the training env's, which
    # a non-learning agent never even resets)
    spec = RunSpec(agent="random", env_kwargs=ENV_KWARGS, seed=0, out=tmp_path / "random",
                   cache_dir=cache_dir, progress=False, train_episodes=1, eval_episodes=1,
                   train_env_id=registered)
    assert run(spec.check()).eval[0]["decisions"] == 9


def test_a_training_env_must_fit_the_evaluation_env(registered, tmp_path, cache_dir):
    from agents.runs.driver import run
    from agents.runs.spec import RunSpec
    from tying_env.errors import SettingError

    with pytest.raises(SettingError, match="needs train_episodes > 0"):
        RunSpec(agent="random", env_kwargs=ENV_KWARGS, train_env_id=registered).check()
    with pytest.raises(SettingError, match="'Nope-v0' is not a registered"):
        RunSpec(agent="random", env_kwargs=ENV_KWARGS, train_episodes=1,
                train_env_id="Nope-v0").check()
    other = {**ENV_KWARGS, "n_layer": 3}
    spec = RunSpec(agent="qlearning", env_kwargs=other, out=tmp_path / "x", cache_dir=cache_dir,
                   progress=False, train_episodes=1, eval_episodes=1, train_env_id=registered)
    with pytest.raises(SettingError, match="other spaces than"):
        run(spec.check())


def test_a_sim_to_real_benchmark_request(registered, tmp_path, cache_dir):
    """`--train-env` through the benchmark's request: each cell's spec trains there, the
    command and results record it, a cell trained elsewhere is another configuration, and
    the option is refused beside a track or without training episodes."""
    from agents.benchmark.cells import conflicts, expected_record, make_request
    from agents.benchmark.cli import main as benchmark
    from agents.runs.driver import run
    from tying_env.errors import SettingError

    request = make_request("LayerTying-GPT2-Tiny-v0", ENV_KWARGS, ["qlearning"], [0], 1,
                           tmp_path / "b", cache_dir=cache_dir, threads=1, train_episodes=2,
                           eval_episodes=1, train_env_id=registered)
    spec = request.spec("qlearning", 0)
    assert spec.train_env_id == registered and "--train-env" in request.command()
    assert request.to_json()["train_env_id"] == registered
    run(spec.check())  # the cell, in this process
    assert expected_record(request.to_json(), "qlearning", 0)["train_env_id"] == registered
    assert conflicts(request) == []
    real_only = make_request("LayerTying-GPT2-Tiny-v0", ENV_KWARGS, ["qlearning"], [0], 1,
                             tmp_path / "b", cache_dir=cache_dir, threads=1, train_episodes=2,
                             eval_episodes=1)
    assert any("train_env_id" in c for c in conflicts(real_only))
    with pytest.raises(SettingError, match="needs train_episodes > 0"):
        make_request("LayerTying-GPT2-Tiny-v0", ENV_KWARGS, ["qlearning"], [0], 1,
                     tmp_path / "c", train_env_id=registered)
    with pytest.raises(SystemExit) as refused:
        benchmark(["--track", "deep", "--train-env", registered, "--out", str(tmp_path / "t")])
    assert refused.value.code == 2


# ---------------------------------------------------------------- the surrogate's board
BOARD_AGENTS = ("random", "static-1", "static-4", "vanilla")


@pytest.fixture(scope="module")
def surrogate_board():
    from agents.surrogate.board import board

    return board("LayerTying-Surrogate-Deep-v0", "python -m agents.surrogate.board --out X",
                 names=BOARD_AGENTS, seeds=(0, 1, 2))


def test_the_board_plays_every_agent_on_every_seed_of_the_track(surrogate_board):
    from agents.runs.result import cell_result

    meta = surrogate_board
    track = meta["request"]["track"]
    assert track["name"] == "deep-surrogate" and track["surrogate_of"] == "deep"
    assert sorted((c["agent"], c["seed"]) for c in meta["cells"]) == sorted(
        (a, s) for a in BOARD_AGENTS for s in (0, 1, 2))
    for cell in meta["cells"]:
        result = cell_result(cell)
        assert result.env_id == "LayerTying-Surrogate-Deep-v0" and result.final_test_ppl is None
        assert math.isfinite(cell["episode_return"]) and result.decisions == 352
        roots = len(set(result.tie_map))
        assert roots == {"static-1": 1, "static-4": 4, "vanilla": 12}.get(cell["agent"], roots)
    assert meta["agents"]["vanilla"]["trainable_fraction"]["mean"] == 1.0
    paired = meta["statistics"]["paired"]
    assert paired["best_static"] in ("static-1", "static-4", "vanilla")
    assert set(paired["normalised"]["agents"]) == {"random"}  # the others have no random twin


def test_the_board_is_deterministic_and_flags_out_of_data_episodes(surrogate_board,
                                                                   monkeypatch):
    from agents.surrogate import board as module

    monkeypatch.setattr(module, "MAX_OOD_SHARE", -1.0)  # every decision counts as too many
    again = module.board("LayerTying-Surrogate-Deep-v0", "cmd", names=("static-4",),
                         seeds=(1,))
    (cell,) = again["cells"]
    (first,) = [c for c in surrogate_board["cells"] if c["name"] == "static-4-s1"]
    assert cell["episode_return"] == first["episode_return"]
    assert cell["result"]["final_val_ppl"] == first["result"]["final_val_ppl"]
    assert cell["invalid"] and not first["invalid"]
    assert again["agents"]["static-4"]["invalid_seeds"] == [1]


def test_the_surrogate_section_stands_apart_and_rechecks_its_top_agents(surrogate_board):
    from agents.benchmark.leaderboard import group, render
    from agents.benchmark.paired_page import surrogate_lines

    meta = {**surrogate_board, "_file": "docs/results/leaderboard/deep-surrogate.json"}
    real_scores = {"static-4": {"value": 1.0, "low": 0.9, "high": 1.1},
                   "random": {"value": 0.0, "low": 0.0, "high": 0.0},
                   "schedule-bandit": {"value": 0.5, "low": 0.2, "high": 0.8}}
    real = {"_file": "docs/results/leaderboard/deep.json", "agents": {},
            "request": {"track": {"name": "deep", "version": 1, "objective": "o"}},
            "statistics": {"paired": {"normalised": {"agents": real_scores}}}}
    assert list(group([meta, real])) == [("deep", "1"), ("deep-surrogate", "1")]
    text = "\n".join(surrogate_lines(meta, [real]))
    assert "**Emulated, not trained.**" in text and "| `random` |" in text
    # random is the only scored agent on this small board: 1st there, 3rd of 3 for real
    assert "| `random` | 0.00 [0.00, 0.00] (n=3) | 1 | 0.00 [0.00, 0.00] | 3 |" in text
    assert "1 of the surrogate's top 3 are in the real track's top 3 (3 agents" in text
    assert "not re-checked" in "\n".join(surrogate_lines(meta, []))
    page = render([meta], "python -m agents.benchmark.leaderboard X --out Y", {})
    assert "## Track `deep-surrogate` (version 1): the surrogate of `deep`" in page


def test_the_page_says_whether_the_shipped_model_is_the_validated_one():
    from agents.surrogate.page import shipped_lines
    from tying_env.files import read_json
    from tying_env.surrogate.env import HERE

    data = read_json(HERE / "deep-v1.json")["data_sha256"]
    same = shipped_lines({"track": "deep", "data_sha256": data})[0]
    assert "`LayerTying-Surrogate-Deep-v0`" in same and "fitted on the same data" in same
    assert "python -m agents.surrogate.fit" in same
    meta = read_json(HERE / "deep-v1.json")
    assert f"lag-1 autocorrelation within the logged episodes: {meta['residual_lag1']:.3f}" \
        in same and f"at rates {min(meta['level']['kappa']):.2f} to" in same
    other = shipped_lines({"track": "deep", "data_sha256": "0" * 64})[0]
    assert "**other data**" in other and "does not validate it" in other
    assert shipped_lines({"track": "small", "data_sha256": data})[0].startswith(
        "No surrogate id ships")
