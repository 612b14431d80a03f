"""Equal tuning (`agents.benchmark.tune`): seeded, on training seeds only, one search table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import agents
import tying_env
from agents.base import check_hyperparameters
from agents.benchmark import tracks, tune
from agents.runs.protocol import eval_seed, train_seed
from tying_env.errors import SettingError

QUICK = {"n_layer": 4, "n_embd": 16, "n_head": 2, "seq_len": 16, "batch_size": 2,
         "max_sweeps": 1, "steps_per_decision": 1, "eval_batches": 1, "device": "cpu"}


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> tracks.Track:
    track = tracks.Track(name="quick-tune", version=1, env_id="LayerTying-GPT2-Tiny-v0",
                         env_kwargs=QUICK, seeds=(0,), agents=("schedule-bandit",),
                         description="a test track", objective="return",
                         rank_metric="episode_return", train_episodes=1, eval_episodes=2)
    monkeypatch.setitem(tracks.TRACKS, "quick-tune", track)
    return track


def test_every_search_space_names_an_agent_and_its_hyperparameters() -> None:
    for name, space in tune.SEARCH_SPACE.items():
        assert name in agents.names() and agents.factory(name).learns
        allowed = agents.factory(name).hyperparameters()
        assert set(space) <= set(allowed), (name, set(space) - set(allowed))
        check_hyperparameters(agents.factory(name),
                              {k: dim.example() for k, dim in space.items()})


def test_tuning_seeds_are_training_seeds_held_out_from_every_track() -> None:
    for name in tracks.TRACKS:
        track = tracks.get(name)
        train, valid = tune.tuning_seeds(track, tune.DEFAULT_EPISODES)
        assert len(valid) == tune.VALIDATION_EPISODES and not set(train) & set(valid)
        seeds = set(track.seeds) | set(track.extra_seeds)
        test = {eval_seed(s, k) for s in seeds for k in range(max(track.eval_episodes, 100))}
        cells = {train_seed(s, i) for s in seeds for i in range(max(track.train_episodes, 1))}
        assert not (set(train) | set(valid)) & (test | cells | seeds)
        assert max(train + valid) < eval_seed(0, 0)


def test_tune_writes_trials_and_best_deterministically(quick: tracks.Track, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    argv = ["--track", "quick-tune", "--agent", "schedule-bandit", "--trials", "2",
            "--episodes", "1", "--seed", "3", "--threads", "1"]
    first = tune.main([*argv, "--out", str(tmp_path / "a.json")])
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["track"] == "quick-tune/v1" and doc["agent"] == "schedule-bandit"
    assert len(doc["trials"]) == 2 and doc["best"]["values"].keys() == {"exploration"}
    assert doc["budget"] == {"trials": 2, "train_episodes": 1, "validation_episodes": 2}
    assert doc["sampler"] == {"name": "TPESampler", "seed": 3}
    assert doc["test_seeds_used"] is False and doc["env_model"] is None  # not a surrogate
    assert doc["seeds"]["train"] == [train_seed(tune.TUNE_SEED, 0)]
    assert doc["best"]["score"] == max(t["score"] for t in doc["trials"])
    second = tune.main([*argv, "--out", str(tmp_path / "b.json")])
    assert second["trials"] == first["trials"]  # the same seed: the same trials and scores
    # an existing output is refused without --overwrite
    with pytest.raises(SystemExit) as e:
        tune.main([*argv, "--out", str(tmp_path / "a.json")])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_tuning_runs_on_the_tracks_surrogate(tmp_path: Path) -> None:
    """`--train-env`: every trial trains and validates on the surrogate (seconds); the
    record names the env tuned on, and the same command gives the same trials."""
    record = tune.main(["--track", "deep", "--agent", "schedule-bandit", "--trials", "2",
                        "--episodes", "1", "--train-env", "LayerTying-Surrogate-Deep-v0",
                        "--threads", "1", "--out", str(tmp_path / "a.json")])
    again = tune.main(["--track", "deep", "--agent", "schedule-bandit", "--trials", "2",
                       "--episodes", "1", "--train-env", "LayerTying-Surrogate-Deep-v0",
                       "--threads", "1", "--out", str(tmp_path / "b.json")])
    assert record["env"] == "LayerTying-Surrogate-Deep-v0" and len(record["trials"]) == 2
    shipped = json.loads((Path(tying_env.__file__).parent / "surrogate" / "deep-v1.json")
                         .read_text())
    assert record["env_model"] == shipped["data_sha256"]  # the model it tuned on
    assert record["trials"] == again["trials"]
    assert all(math.isfinite(t["score"]) for t in record["trials"])
    with pytest.raises(SettingError, match="does not emulate"):
        tune.tune(tracks.get("tiny"), "schedule-bandit", 1, 1, train_env_id="X")
