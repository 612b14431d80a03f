"""Expanded (Hugging Face) and compact (root blocks only) exports of a trained tied model."""

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from tying_env.export import load_compact, save_compact, save_expanded
from tying_env.files import write_json
from tying_env.models import TiedModel, gpt2_config

L, VOCAB, SEQ = 6, 50, 16
TIES = [0, 1, 1, 0, 4, 4]  # three roots: 0, 1 and 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run as fast on one thread, and far faster when other jobs share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trained(ties, mode: str = "copy", steps: int = 3) -> TiedModel:
    """A tied model after a few AdamW steps, so roots differ from their initialisation."""
    torch.manual_seed(0)
    model = TiedModel(gpt2_config(L, 32, 4, SEQ, VOCAB, dropout=0.1), mode, ties=ties)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, VOCAB, (4, SEQ + 1), generator=g)
        loss = model.loss(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def inputs() -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, SEQ), generator=torch.Generator().manual_seed(2))


def data_bytes(path: Path) -> tuple[int, int]:
    """(tensor data bytes, tensor count) of a safetensors file, read from its header."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    header.pop("__metadata__", None)
    return len(raw) - 8 - header_len, len(header)


@pytest.fixture(scope="module", params=["copy", "share"])
def exported(request, tmp_path_factory):
    model = trained(TIES, request.param)
    out = tmp_path_factory.mktemp(f"export-{request.param}")
    save_expanded(model, out / "model")
    save_compact(model, out / "compact")
    return model, out


@torch.no_grad()
def test_expanded_export_reloads_with_from_pretrained(exported):
    model, out = exported
    hf = GPT2LMHeadModel.from_pretrained(out / "model").eval()
    x = inputs()
    torch.testing.assert_close(hf(input_ids=x).logits, model(x), atol=1e-5, rtol=0)


@torch.no_grad()
def test_compact_export_reloads_to_the_same_model(exported):
    model, out = exported
    loaded = load_compact(out / "compact")
    assert loaded.ties == model.ties and loaded.tie_mode == model.tie_mode
    assert loaded.param_counts() == model.param_counts()
    assert not loaded.training
    x = inputs()
    torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)


def test_compact_is_smaller_by_the_tied_fraction(exported):
    model, out = exported
    trainable, total = model.param_counts()
    itemsize = next(model.parameters()).element_size()
    compact_file = out / "compact" / "weights.safetensors"
    expanded_file = out / "model" / "model.safetensors"
    # the tensor data is exactly the unique parameters: the LM head is stored once (tied)
    compact_data, compact_n = data_bytes(compact_file)
    expanded_data, expanded_n = data_bytes(expanded_file)
    assert compact_data == trainable * itemsize
    assert expanded_data == total * itemsize
    assert compact_n < expanded_n
    # whole files: expected size ratio trainable/total, up to the JSON headers, bounded
    # generously at 160 bytes per tensor entry plus 1 KiB of metadata per file
    tolerance = 160 * (compact_n + expanded_n) + 2 * 1024
    expanded_size, compact_size = expanded_file.stat().st_size, compact_file.stat().st_size
    assert abs(compact_size - expanded_size * trainable / total) <= tolerance
    assert compact_size < expanded_size * (trainable / total + 0.05)


def test_untied_model_compacts_to_the_same_size(tmp_path):
    model = trained(list(range(L)), steps=1)
    save_compact(model, tmp_path / "compact")
    save_expanded(model, tmp_path / "model")
    compact_data, _ = data_bytes(tmp_path / "compact" / "weights.safetensors")
    expanded_data, _ = data_bytes(tmp_path / "model" / "model.safetensors")
    assert compact_data == expanded_data


def test_compact_config_records_tie_map_and_mode(exported):
    model, out = exported
    meta = json.loads((out / "compact" / "config.json").read_text())
    assert meta["tie_map"] == list(model.ties)
    assert meta["tie_mode"] == model.tie_mode
    assert meta["config"]["n_layer"] == L and meta["config"]["model_type"] == "gpt2"


def test_load_compact_rejects_bad_folders(tmp_path, exported):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_compact(tmp_path)
    _, out = exported
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "weights.safetensors").write_bytes((out / "compact" / "weights.safetensors")
                                                 .read_bytes())
    meta = json.loads((out / "compact" / "config.json").read_text())
    meta["tie_map"] = list(range(L))  # claims roots whose weights the file lacks
    (broken / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match tie map"):
        load_compact(broken)


def test_write_json_is_strict_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"a": math.nan, "b": [math.inf, 1.5], "c": torch.tensor(2)})
    assert json.loads(target.read_text()) == {"a": None, "b": [None, 1.5], "c": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
