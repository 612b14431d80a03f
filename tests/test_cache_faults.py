"""Damaged caches heal: each fault is detected, warned about once (naming the file), rebuilt
from the source, and never loaded as data (issue 15, item 3). Offline and fast."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tying_env.data.corpus import Corpus, load_corpus, synthetic_corpus
from tying_env.files import check_manifest, write_manifest

TEXT = (
    " = Valkyria Chronicles III = \n"
    "\n"
    " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video game .\n"
    " The game began development in 2010 , carrying over a large portion of the work .\n"
) * 40
SPLIT_TEXTS = {"train": TEXT, "valid": TEXT[:500], "test": TEXT[500:1500]}


# ------------------------------------------------------------------ loading


def text_corpus(tmp_path: Path, cache: Path) -> Corpus:
    """A small text corpus with a byte-level BPE of 300 ids (tokenizer and tokens cached)."""
    data = tmp_path / "data"
    if not data.is_dir():
        data.mkdir()
        for split, text in SPLIT_TEXTS.items():
            (data / f"{split}.txt").write_text(text, encoding="utf-8")
    return load_corpus("text", data_dir=data, vocab_size=300, cache_dir=cache)


def small_synthetic(tmp_path: Path, cache: Path) -> Corpus:
    return synthetic_corpus(0, 64, n_train=2000, n_valid=200, n_test=200, cache_dir=cache)


LOADERS = {"text": text_corpus, "synthetic": small_synthetic}


def load_warned(load: Callable[[], Corpus]) -> tuple[Corpus, list[str]]:
    """The corpus `load()` returns and the cache warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = load()
    return corpus, [str(w.message) for w in caught if "cache entry" in str(w.message)]


def assert_same_tokens(a: Corpus, b: Corpus) -> None:
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert a.identity == b.identity


# ------------------------------------------------------------------ faults
# Each fault damages the cache under `cache` and returns the path the warning must name.
# Files are replaced rather than changed in place: a corpus loaded earlier still maps them.


def only(cache: Path, pattern: str) -> Path:
    (path,) = cache.glob(pattern)
    return path


def replace_bytes(path: Path, data: bytes) -> Path:
    path.unlink()
    path.write_bytes(data)
    return path


def truncate_header(cache: Path) -> Path:
    path = only(cache, "corpora/*/train.npy")
    replace_bytes(path, path.read_bytes()[:50])
    with pytest.raises(ValueError, match="EOF: reading array header"):  # the reported symptom
        np.load(path, mmap_mode="r")
    return path


def truncate_data(cache: Path) -> Path:
    path = only(cache, "corpora/*/test.npy")
    data = path.read_bytes()
    return replace_bytes(path, data[: len(data) // 2])


def flip_bytes(cache: Path) -> Path:
    path = only(cache, "corpora/*/valid.npy")
    data = bytearray(path.read_bytes())
    data[-3:] = bytes(b ^ 0x5A for b in data[-3:])  # same size, other token ids
    return replace_bytes(path, bytes(data))


def drop_manifest(cache: Path) -> Path:  # an old-style cache, written before manifests
    path = only(cache, "corpora/*/manifest.json")
    path.unlink()
    return path


def garbage_manifest(cache: Path) -> Path:
    return replace_bytes(only(cache, "corpora/*/manifest.json"), b"\x00\xff{not json")


def empty_manifest(cache: Path) -> Path:  # valid JSON that lists no files
    return replace_bytes(only(cache, "corpora/*/manifest.json"), b'{"version": 1, "files": {}}')


def truncate_tokenizer(cache: Path) -> Path:
    path = only(cache, "tokenizers/*.json")
    data = path.read_bytes()
    return replace_bytes(path, data[: len(data) // 3])


def garble_tokenizer(cache: Path) -> Path:
    path = only(cache, "tokenizers/*.json")
    data = path.read_bytes()
    at = data.index(b'"vocab"') + 20  # inside the vocabulary: still JSON, other tokens
    return replace_bytes(path, data[:at] + b"Zq" + data[at + 2:])


def unparsable_tokenizer(cache: Path) -> Path:
    """Bytes that do not parse, with a manifest that matches them (written after the fault)."""
    path = only(cache, "tokenizers/*.json")
    replace_bytes(path, b'{"version": "1.0", "model": ')
    write_manifest(path.with_suffix(".manifest"), [path.name])
    return path


def drop_tokenizer_manifest(cache: Path) -> Path:
    path = only(cache, "tokenizers/*.manifest")
    path.unlink()
    return path


def garbage_tokenizer_manifest(cache: Path) -> Path:
    return replace_bytes(only(cache, "tokenizers/*.manifest"), b"[1, 2")


CORPUS_FAULTS = [truncate_header, truncate_data, flip_bytes, drop_manifest, garbage_manifest,
                 empty_manifest]
TOKENIZER_FAULTS = [truncate_tokenizer, garble_tokenizer, unparsable_tokenizer,
                    drop_tokenizer_manifest, garbage_tokenizer_manifest]


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_healthy_cache_gives_no_warning(tmp_path: Path, kind: str) -> None:
    load = LOADERS[kind]
    first, warned = load_warned(lambda: load(tmp_path, tmp_path / "cache"))
    assert warned == []
    again, warned = load_warned(lambda: load(tmp_path, tmp_path / "cache"))
    assert warned == [] and isinstance(again.train, np.memmap)
    assert_same_tokens(first, again)


@pytest.mark.parametrize(
    ("kind", "fault"),
    [(kind, f) for kind in sorted(LOADERS) for f in CORPUS_FAULTS]
    + [("text", f) for f in TOKENIZER_FAULTS],
    ids=lambda v: v.__name__ if callable(v) else v,
)
def test_damaged_cache_heals(tmp_path: Path, kind: str, fault: Callable[[Path], Path]) -> None:
    load, cache = LOADERS[kind], tmp_path / "cache"
    fresh = load(tmp_path, tmp_path / "fresh-cache")
    load(tmp_path, cache)
    damaged = fault(cache)

    healed, warned = load_warned(lambda: load(tmp_path, cache))
    assert len(warned) == 1, warned
    assert str(damaged) in warned[0] and "\n" not in warned[0]
    assert_same_tokens(healed, fresh)

    again, warned = load_warned(lambda: load(tmp_path, cache))
    assert warned == []
    assert_same_tokens(again, fresh)
    for manifest in [*cache.glob("corpora/*/manifest.json"), *cache.glob("tokenizers/*.manifest")]:
        names = [p.name for p in manifest.parent.glob("*.npy")] or [f"{manifest.stem}.json"]
        assert check_manifest(manifest, names) == []
    tokenizers = sorted(p.name for p in cache.glob("tokenizers/*"))
    assert tokenizers == sorted(p.name for p in (tmp_path / "fresh-cache").glob("tokenizers/*"))


def test_healed_tokenizer_matches_a_fresh_one(tmp_path: Path) -> None:
    text_corpus(tmp_path, tmp_path / "fresh-cache")
    text_corpus(tmp_path, tmp_path / "cache")
    damaged = truncate_tokenizer(tmp_path / "cache")
    _, warned = load_warned(lambda: text_corpus(tmp_path, tmp_path / "cache"))
    assert len(warned) == 1 and str(damaged) in warned[0]
    fresh = only(tmp_path / "fresh-cache", "tokenizers/*.json")
    assert damaged.read_bytes() == fresh.read_bytes()


def test_check_manifest_names_each_problem(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abcdef")
    (tmp_path / "b.bin").write_bytes(b"xyz")
    manifest = tmp_path / "manifest.json"
    assert check_manifest(manifest, ["a.bin"]) == [f"{manifest} is missing (an unfinished "
                                                   "entry or one from an older version)"]
    write_manifest(manifest, ["a.bin", "b.bin"])
    assert check_manifest(manifest, ["a.bin", "b.bin"]) == []
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.bin").write_bytes(b"xyZ")
    assert check_manifest(manifest, ["a.bin", "b.bin", "c.bin"]) == [
        f"{tmp_path / 'a.bin'} has 3 bytes, its manifest says 6",
        f"{tmp_path / 'b.bin'} does not match its manifest's sha256",
        f"{manifest} does not list c.bin",
    ]
    (tmp_path / "b.bin").unlink()
    assert check_manifest(manifest, ["b.bin"]) == [f"{tmp_path / 'b.bin'} is missing"]
    manifest.write_text("[]")
    assert check_manifest(manifest, ["a.bin"]) == [f"{manifest} is not a valid manifest"]
