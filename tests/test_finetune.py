"""Fine-tuning a run's exported model on GLUE (`tying_env.finetune`), offline.

One small run (`paper-sequence`, 3 layers, tie map `[0, 0, 2]`, on a tiny local text
corpus with its byte-level BPE) exports `model/` and `compact/`; each test fine-tunes it
on small data in GLUE's own TSV layout that the test writes (SST-2, RTE).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import shutil
from pathlib import Path

import pytest

from agents.runs.driver import run
from agents.runs.spec import RunSpec
from tying_env.errors import DataUnavailableError, MissingDataError, SettingError
from tying_env.finetune.__main__ import main
from tying_env.finetune.classifier import IDS, load_classifier
from tying_env.finetune.glue import get_task, read_hf_split, read_tsv_split, task_metrics
from tying_env.finetune.run import FinetuneSettings, finetune
from tying_env.models.tied import TiedBlock

WORDS = ("the game began development in 2010 carrying over a large portion of the work "
         "music was composed by").split()
TEXT = " ".join(WORDS * 3) + " .\n"
ENV = {"dataset": "text", "tokenizer": "bpe", "vocab_size": 300, "n_layer": 3, "n_embd": 32,
       "n_head": 2, "seq_len": 32, "batch_size": 4, "eval_batches": 1, "max_sweeps": 1}
FAST = {"epochs": 4, "batch_size": 16, "lr": 3e-3}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cache_dir) -> Path:
    """A run folder of `train_agent.py`'s driver, with `model/` and `compact/`."""
    text = tmp_path_factory.mktemp("text")
    for split in ("train", "valid", "test"):
        (text / f"{split}.txt").write_text(TEXT * (20 if split == "train" else 4))
    out = tmp_path_factory.mktemp("run") / "run"
    with contextlib.redirect_stderr(io.StringIO()):
        run(RunSpec(agent="paper-sequence", env_kwargs={**ENV, "data_dir": str(text)},
                    out=out, cache_dir=cache_dir, progress=False))
    return out


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    """SST-2 (the label is the last word's) and RTE in GLUE's layout, seeded."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("glue")
    for split, n in (("train", 48), ("dev", 24)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            y = rng.randint(0, 1)
            rows.append(f"{_sentence(rng)} {'music' if y else 'work'}\t{y}")
        (root / "SST-2").mkdir(exist_ok=True)
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        rows = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            y = rng.randint(0, 1)
            rows.append(f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t"
                        f"{('entailment', 'not_entailment')[y]}")
        (root / "RTE").mkdir(exist_ok=True)
        (root / "RTE" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def _predictions(folder: Path) -> tuple[list[str], list[str]]:
    with open(folder / "predictions.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["prediction"] for r in rows], [r["label"] for r in rows]


def test_sst2_end_to_end_from_exported_model(exported, glue_dir, tmp_path):
    """`model/` (HF folder, its own tokenizer) fine-tuned on SST-2: the metric is computed,
    the result file is well-formed, and the model learns the task."""
    out = tmp_path / "glue-sst2"
    assert main(["--model", str(exported / "model"), "--task", "SST-2", "--data-dir",
                 str(glue_dir), "--out", str(out), "--epochs", "4", "--batch-size", "16",
                 "--lr", "3e-3"]) == 0
    result = json.loads((out / "finetune.json").read_text())
    assert result["format"] == "layer-tying-gym/finetune" and result["task"] == "sst2"
    assert result["metric"] == "accuracy" and result["eval_split"] == "dev"
    model = result["model"]
    assert (model["source"], model["ties"], model["pooling"]) == ("hf", "untie", "last")
    assert model["new_weights"] == ["score.weight"]
    assert model["trainable_params"] == model["untied_params"]
    assert result["data"]["train_examples"] == 48 and result["data"]["eval_examples"] == 24
    assert result["data"]["train_truncated"] == 0
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert result["metrics"] == result["history"][-1]["metrics"]
    predicted, labels = _predictions(out)  # the score is that of the written predictions
    assert len(predicted) == 24
    assert result["score"] == sum(p == y for p, y in zip(predicted, labels, strict=True)) / 24
    assert result["score"] >= 0.9 > result["majority_baseline"]["metrics"]["accuracy"]


def test_compact_keeps_ties_on_a_pair_task(exported, glue_dir, tmp_path):
    """`compact/` fine-tuned on RTE keeps its tie map: the tied position owns no weights,
    the run's `model/` tokenizer joins the pair with its end-of-text token; deterministic."""
    settings = FinetuneSettings(model=str(exported / "compact"), task="rte",
                                data_dir=str(glue_dir), out=str(tmp_path / "a"), **FAST)
    first = finetune(settings)
    model = first["model"]
    assert (model["source"], model["ties"], model["tie_map"]) == ("compact", "keep", [0, 0, 2])
    block = (model["untied_params"] - model["trainable_params"])
    assert block > 0 and block * 3 < model["untied_params"]  # one block of three, not more
    assert first["tokenizer"]["name"] == str(exported / "model")
    assert first["tokenizer"]["pair_separator"] == [first["tokenizer"]["pad_id"]]
    assert set(first["metrics"]) == {"accuracy"} and 0 <= first["score"] <= 1
    again = finetune(FinetuneSettings(**{**settings.__dict__, "out": str(tmp_path / "b")}))
    assert again["history"] == first["history"]
    untied = finetune(FinetuneSettings(**{**settings.__dict__, "out": str(tmp_path / "c"),
                                          "ties": "untie", "epochs": 1}))
    assert untied["model"]["trainable_params"] == model["untied_params"]


def test_tied_classifier_runs_its_roots(exported):
    """With the tie map kept, a tied position runs its root's block: before training the
    classifier computes what the untied one does; a padded example is read at its last
    real token, as if it were alone."""
    import torch

    kept, untied = (load_classifier(exported / "compact", 2, t) for t in ("keep", "untie"))
    untied.model.score.load_state_dict(kept.model.score.state_dict())
    blocks = kept.model.transformer.h
    assert isinstance(blocks[1], TiedBlock) and blocks[1].root is blocks[0]
    x = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        logits = kept.logits(x, mask)
        assert torch.allclose(logits, untied.logits(x, mask), atol=1e-6)
        assert torch.allclose(logits[1], kept.logits(x[1:, :3], mask[1:, :3])[0], atol=1e-6)


def test_ids_for_a_model_without_tokenizer(exported, tmp_path):
    """A model folder without a tokenizer (as a synthetic-corpus run's): refused with the
    way out named; with tokenizer='ids', texts are token ids."""
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(exported / "model" / name, model / name)
    data = tmp_path / "SST-2"
    data.mkdir()
    rows = "sentence\tlabel\n" + "".join(f"{i} {i + 1} {7 * y}\t{y}\n"
                                         for i in range(12) for y in (0, 1))
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text(rows)
    settings = FinetuneSettings(model=str(model), task="sst2", data_dir=str(data),
                                out=str(tmp_path / "out"), epochs=1)
    with pytest.raises(SettingError, match="tokenizer='ids'") as e:
        finetune(settings)
    assert e.value.argument == "tokenizer"
    result = finetune(FinetuneSettings(**{**settings.__dict__, "tokenizer": IDS}))
    assert result["tokenizer"]["name"] == IDS and result["data"]["train_examples"] == 24
    (data / "dev.tsv").write_text("sentence\tlabel\n1 2 300\t0\n")
    with pytest.raises(SettingError, match=r"300.*\[0, 300\)"):
        finetune(FinetuneSettings(**{**settings.__dict__, "tokenizer": IDS, "overwrite": True}))


def test_glue_layouts_and_metrics(tmp_path):
    """Each task's own columns (CoLA has no header; MRPC names its columns), labels as
    `datasets` numbers them, and the task's metric."""
    cola = tmp_path / "CoLA"
    cola.mkdir()
    (cola / "train.tsv").write_text('gj04\t1\t\tOur friends won\'t buy "this" analysis.\n'
                                    "gj04\t0\t*\tThey drank the pub.\n")
    (cola / "dev.tsv").write_text("gj04\t1\t\tOne more pseudo generalization.\n")
    ex = read_tsv_split(get_task("cola"), tmp_path, "train")
    assert ex.texts == [('Our friends won\'t buy "this" analysis.',), ("They drank the pub.",)]
    assert ex.labels == [1, 0]
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (mrpc / "train.tsv").write_text(header + "1\t1\t2\tA cat.\tThe cat.\n")
    (mrpc / "dev.tsv").write_text(header + "0\t3\t4\tA dog.\tNo dog.\n")
    ex = read_tsv_split(get_task("mrpc"), tmp_path, "dev")
    assert (ex.texts, ex.labels) == ([("A dog.", "No dog.")], [0])
    m = task_metrics(get_task("mrpc"), [1, 1, 0, 0], [1, 0, 0, 0])
    assert m == {"f1": pytest.approx(2 / 3), "accuracy": 0.75}
    assert task_metrics(get_task("cola"), [1, 0, 1, 0], [1, 0, 1, 0])["matthews_correlation"] \
        == 1.0


def test_bad_input(exported, glue_dir, tmp_path):
    """Unsupported tasks, missing or malformed data, a tie map asked of an HF folder and an
    earlier result are refused, naming the setting and what is allowed."""
    with pytest.raises(SettingError, match="supported GLUE tasks: sst2, cola, mrpc") as e:
        get_task("stsb")
    assert "regression" in str(e.value) and e.value.argument == "task"
    with pytest.raises(MissingDataError, match="SST-2/train.tsv"):
        read_tsv_split(get_task("sst2"), tmp_path, "train")
    bad = tmp_path / "RTE"
    bad.mkdir()
    (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    (bad / "dev.tsv").write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(SettingError, match=r"train.tsv line 2: label 'maybe'.*entailment"):
        read_tsv_split(get_task("rte"), tmp_path, "train")
    with pytest.raises(SettingError, match=r"lacks the column\(s\) \['sentence2'\]"):
        read_tsv_split(get_task("rte"), tmp_path, "dev")
    base = dict(model=str(exported / "model"), task="sst2", data_dir=str(glue_dir), epochs=1)
    with pytest.raises(SettingError, match="compact/") as e:
        finetune(FinetuneSettings(**base, out=str(tmp_path / "x"), ties="keep"))
    assert e.value.argument == "ties"
    with pytest.raises(SettingError, match="context of 32"):
        finetune(FinetuneSettings(**base, out=str(tmp_path / "x"), max_length=64))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(SettingError, match="does not load as a Hugging Face model") as e:
        finetune(FinetuneSettings(**{**base, "model": str(odd)}, out=str(tmp_path / "x")))
    assert e.value.argument == "model"
    (tmp_path / "x" / "finetune.json").parent.mkdir(exist_ok=True)
    (tmp_path / "x" / "finetune.json").write_text("{}")
    with pytest.raises(SettingError, match="already holds a finetune.json") as e:
        finetune(FinetuneSettings(**base, out=str(tmp_path / "x")))
    assert (tmp_path / "x" / "finetune.json").read_text() == "{}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["--model", str(exported / "model"), "--task", "wnli", "--out",
                     str(tmp_path / "y"), "--data-dir", str(glue_dir)]) == 2
    assert "argument --data-dir" in err.getvalue() and "WNLI/train.tsv" in err.getvalue()


def test_datasets_only_from_the_local_cache(tmp_path, monkeypatch):
    """Without a folder, GLUE comes from the local `datasets` cache only: not there, it
    is unavailable (never downloaded), and the message says to pass a folder."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(DataUnavailableError, match="nothing is downloaded.*SST-2/train.tsv"):
        read_hf_split(get_task("sst2"), "train")
