"""Self-contained run exports: `model/` with its tokenizer and model card; `agent/sb3.zip`.

Two small runs, offline: a baseline on a tiny local text corpus (byte-level BPE), asked
for an SB3 zip it cannot write; and `maskable-ppo` on the tiny synthetic environment with
`--sb3-zip`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel, pipeline, set_seed
from transformers.utils import logging as hf_logging

from agents.runs.card import model_card
from agents.runs.cli import main
from agents.runs.driver import run
from agents.runs.result import RunResult
from agents.runs.spec import RunSpec
from tying_env.data.corpus import load_corpus
from tying_env.data.tokenizer import EOT, BPETokenizer, CharTokenizer
from tying_env.export import (
    corpus_tokenizer,
    hf_tokenizer,
    save_expanded,
)
from tying_env.models import TiedModel, gpt2_config
from tying_env.presets import make_config

TEXT = (
    " The game began development in 2010 , carrying over a large portion of the work .\n"
    " Senjo no Valkyria 3 is a tactical role playing video game for the PlayStation .\n"
    " The music was composed by Hitoshi Sakimoto , who also worked on the earlier games .\n"
) * 40
SPLITS = {"train": TEXT, "valid": TEXT[:2500], "test": TEXT[2500:5000]}
TEXT_ENV = {"dataset": "text", "tokenizer": "bpe", "vocab_size": 300, "n_layer": 2,
            "n_embd": 32, "n_head": 2, "seq_len": 32, "batch_size": 4, "eval_batches": 1,
            "max_sweeps": 1}
SB3_ENV = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1, "max_sweeps": 1}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json")
PROMPT = "The music was composed by"


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("text")
    for split, text in SPLITS.items():
        (folder / f"{split}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, text_dir, cache_dir) -> tuple[Path, dict, str]:
    """A `vanilla` run on the text corpus, asked for an SB3 zip: (folder, result, stderr)."""
    out = tmp_path_factory.mktemp("text-run") / "run"
    spec = RunSpec(agent="vanilla", env_kwargs={**TEXT_ENV, "data_dir": str(text_dir)},
                   out=out, cache_dir=cache_dir, progress=False, sb3_zip=True)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = run(spec)
    return out, result, err.getvalue()


@pytest.fixture(scope="module")
def sb3_run(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("sb3-run") / "run"
    assert main(["--agent", "maskable-ppo", "--env-kwargs", json.dumps(SB3_ENV),
                 "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress",
                 "--sb3-zip"]) == 0
    return out


# ------------------------------------------------------------------ a text corpus


def test_text_model_generates_new_tokens_without_warnings(text_run, caplog):
    out, _, _ = text_run
    generate = pipeline("text-generation", model=str(out / "model"))
    set_seed(0)  # the pipeline samples by default
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="transformers"):
            text = generate(PROMPT)[0]["generated_text"]
    finally:
        hf_logging.disable_propagation()
    assert text.startswith(PROMPT) and len(text) > len(PROMPT), text
    assert not [r for r in caplog.records if r.name.startswith("transformers")], caplog.text


def test_autotokenizer_round_trips_text_with_the_runs_ids(text_run, text_dir, cache_dir):
    out, _, _ = text_run
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    ours = BPETokenizer.train(TEXT, TEXT_ENV["vocab_size"], cache_dir)  # the cached one
    for text in (TEXT[:400], " unseen wörds , émojis 😀 and\ttabs\n"):
        ids = tokenizer(text)["input_ids"]
        assert ids == ours.encode(text).tolist()
        assert tokenizer.decode(ids) == text
    assert len(tokenizer) == ours.vocab_size
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == EOT
    assert tokenizer.model_max_length == TEXT_ENV["seq_len"]


def test_special_ids_and_generation_config(text_run):
    out, _, _ = text_run
    eot = AutoTokenizer.from_pretrained(out / "model").eos_token_id
    model = GPT2LMHeadModel.from_pretrained(out / "model")
    gen = json.loads((out / "model" / "generation_config.json").read_text())
    assert model.config.eos_token_id == model.config.pad_token_id == eot
    assert gen["eos_token_id"] == gen["pad_token_id"] == gen["bos_token_id"] == eot
    assert gen["max_new_tokens"] == TEXT_ENV["seq_len"] // 2


def test_text_model_card_describes_the_run(text_run):
    out, result, _ = text_run
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "pipeline_tag: text-generation" in card
    for piece in ("vanilla", "seed 0", "LayerTying-GPT2-Tiny-v0", f"`{result.tie_map}`",
                  f"{result.final_val_ppl:.3f}", f"{result.final_test_ppl:.3f}",
                  f"{result.trainable_fraction:.3f}", '"vocab_size": 300',
                  "untied", str(out / "compact"), "load_compact", "byte-level BPE", EOT,
                  'pipeline("text-generation"', "MIT", "hay2024dynamic"):
        assert piece in card, piece


def test_non_sb3_agent_asked_for_a_zip_notes_it_and_runs(text_run):
    out, result, err = text_run
    assert "--sb3-zip" in err and "'vanilla'" in err
    assert len([line for line in err.splitlines() if "sb3" in line]) == 1
    assert not (out / "agent" / "sb3.zip").exists()
    assert (out / "agent" / "agent.json").is_file() and result.all_decisions


# ------------------------------------------------------------------ the synthetic corpus


def test_synthetic_model_has_no_tokenizer_and_says_so(sb3_run):
    model_dir = sb3_run / "model"
    assert not [name for name in TOKENIZER_FILES if (model_dir / name).exists()]
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert "ids have no text" in card and "pipeline_tag" not in card
    assert "maskable-ppo" in card and "optimal validation / test perplexity" in card
    gen = json.loads((model_dir / "generation_config.json").read_text())
    assert gen.get("eos_token_id") is None and gen.get("pad_token_id") is None
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    ids = torch.tensor([[1, 2, 3]])
    new = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert new.shape == (1, 8) and torch.equal(new[:, :3], ids)


def test_sb3_zip_loads_with_maskable_ppo(sb3_run):
    from sb3_contrib import MaskablePPO

    result = json.loads((sb3_run / "result.json").read_text())
    n_layer = result["env_kwargs"]["n_layer"]
    agent = MaskablePPO.load(sb3_run / "agent" / "sb3.zip", device="cpu")
    assert agent.observation_space.shape == (2 * n_layer + 3,)
    obs = np.zeros(agent.observation_space.shape, dtype=np.float32)
    obs[:n_layer] = np.arange(n_layer)
    mask = np.array([True, True, False, False])
    action, _ = agent.predict(obs, action_masks=mask, deterministic=True)
    assert int(action) in (0, 1)
    assert (sb3_run / "agent" / "agent.json").is_file()  # the project's own state as well


# ------------------------------------------------------------------ pieces


def test_char_tokenizer_hf_form_gives_the_same_ids(tmp_path, text_dir, cache_dir):
    corpus = load_corpus("text", data_dir=text_dir, tokenizer="char", cache_dir=cache_dir)
    cfg = make_config(dataset="text", data_dir=str(text_dir), tokenizer="char")
    tok, note = corpus_tokenizer(corpus, cfg, cache_dir)
    assert isinstance(tok, CharTokenizer) and tok.name == corpus.tokenizer
    assert "no end-of-text token" in note
    hf_tokenizer(tok).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    seen, unseen = TEXT[:300], "Valkyria <unk> ß!\n"
    for text in (seen, unseen):
        assert loaded(text)["input_ids"] == tok.encode(text).tolist()
    assert loaded.decode(loaded(seen)["input_ids"]) == seen
    assert loaded.decode(loaded(unseen)["input_ids"]) == tok.decode(tok.encode(unseen))


def test_a_saved_model_folder_serves_as_a_tokenizer(text_run, text_dir, cache_dir):
    """The exported tokenizer is a Hugging Face tokenizer: a new corpus can use it, and its
    export saves it unchanged."""
    out, _, _ = text_run
    folder = str(out / "model")
    corpus = load_corpus("text", data_dir=text_dir, tokenizer=folder, cache_dir=cache_dir)
    cfg = make_config(dataset="text", data_dir=str(text_dir), tokenizer=folder)
    tok, note = corpus_tokenizer(corpus, cfg, cache_dir)
    assert tok is not None and tok.name == corpus.tokenizer and folder in note
    first = load_corpus("text", data_dir=text_dir, tokenizer="bpe", vocab_size=300,
                        cache_dir=cache_dir)
    assert np.array_equal(np.asarray(corpus.train), np.asarray(first.train))


def test_save_expanded_leaves_no_stale_tokenizer_or_staging_files(tmp_path):
    bpe = BPETokenizer.train(TEXT, 300)
    torch.manual_seed(0)
    model = TiedModel(gpt2_config(2, 16, 2, 16, bpe.vocab_size), "copy", ties=[0, 0])
    folder = tmp_path / "model"
    save_expanded(model, folder, tokenizer=hf_tokenizer(bpe), card="# card\n")
    assert (folder / "tokenizer.json").is_file() and (folder / "README.md").is_file()
    save_expanded(model, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json",
                                                        "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert GPT2LMHeadModel.from_pretrained(folder).config.eos_token_id is None


def test_model_card_of_a_diverged_run():
    result = RunResult(agent="x", env_id="E", seed=1, env_kwargs={"dataset": "synthetic"},
                       final_val_ppl=math.nan, final_test_ppl=math.inf, tie_map=[0, 0, 1],
                       trainable_fraction=0.5, trainable_params=10, total_params=20,
                       diverged=True, notes=["training diverged"])
    card = model_card(result, folder="run/model", compact=None, tokenizer_note="none",
                      has_tokenizer=False, n_positions=8)
    assert card.count("not finite") == 2 and "Training diverged" in card
    assert "layers [1, 2] are tied" in card and "load_compact" not in card


def test_model_card_shows_the_hyperparameters_the_agent_was_built_with():
    """The values a hyperparameter file gave (not only the run's own agent_kwargs)."""
    result = RunResult(agent="qlearning", env_id="E", seed=0, agent_kwargs={"gamma": 0.5},
                       env_kwargs={"dataset": "synthetic"}, tie_map=[0, 1])
    card = model_card(result, folder="run/model", compact=None, tokenizer_note="none",
                      has_tokenizer=False, n_positions=8,
                      hyperparameters={"lr": 0.001, "gamma": 0.5})
    assert '| agent settings | `{"gamma": 0.5}` |' in card
    assert '| agent hyperparameters (as built) | `{"lr": 0.001, "gamma": 0.5}` |' in card
    bare = model_card(result, folder="run/model", compact=None, tokenizer_note="none",
                      has_tokenizer=False, n_positions=8)
    assert "as built" not in bare
