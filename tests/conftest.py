"""Shared fixtures: one on-disk cache per test session, the offline WikiText-2 folder."""

from pathlib import Path

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
