"""Shared fixtures: one on-disk cache per test session, the offline WikiText-2 folder."""

from pathlib import Path
from typing import Any

import pytest
import torch

from tying_env.data.corpus import default_shared_data_dir, offline_wikitext2

torch.set_num_threads(1)  # robust when other jobs share the cores


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def wikitext_dir(tmp_path_factory) -> Path:
    shared = default_shared_data_dir()
    if not (shared / "wikitext-2" / "valid.txt").exists():
        pytest.skip(f"offline WikiText-2 needs {shared}/wikitext-2 (see shared/data/README.md)")
    return offline_wikitext2(tmp_path_factory.mktemp("wikitext2"))


# a small benchmark shared by the tests of results files (validate) and of logged
# transitions (surrogate): a learner, a random agent and conventional training on one
# seed, 3 sweeps of a 4-layer model, one torch thread per worker
SMALL_BENCHMARK_ENV = {"n_layer": 4, "n_embd": 32, "n_head": 2, "max_sweeps": 3,
                       "eval_batches": 1, "param_penalty": 1e-3}
SMALL_BENCHMARK_AGENTS = ("qlearning", "random", "vanilla")


@pytest.fixture(scope="session")
def small_benchmark(tmp_path_factory, cache_dir) -> Path:
    """The folder of the small benchmark (its results.json and cells)."""
    import json

    from agents.benchmark import main

    out = tmp_path_factory.mktemp("small-benchmark")
    assert main(["--env", "LayerTying-GPT2-Tiny-v0", "--env-kwargs",
                 json.dumps(SMALL_BENCHMARK_ENV), "--agents", ",".join(SMALL_BENCHMARK_AGENTS),
                 "--seeds", "0", "--workers", "1", "--threads", "1", "--cache-dir",
                 str(cache_dir), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture
def make_env(request: pytest.FixtureRequest, cache_dir: Path) -> Any:
    """A factory of tiny environments: the test module's `FAST` settings, then overrides."""
    import gymnasium as gym

    fast = request.module.FAST

    def make(**overrides: Any) -> gym.Env:
        return gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, **{**fast, **overrides})
    return make
