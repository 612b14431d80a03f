"""Corpora, tokenizers, caches and the synthetic source (offline, fast)."""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from tying_env.data import corpus as corpus_mod
from tying_env.data.corpus import (
    SYNTHETIC_TEST_TOKENS,
    SYNTHETIC_TRAIN_TOKENS,
    SYNTHETIC_VALID_TOKENS,
    default_cache_dir,
    default_shared_data_dir,
    load_corpus,
    offline_wikitext2,
    synthetic_corpus,
)
from tying_env.data.synthetic import HMMSource
from tying_env.data.tokenizer import EOT, BPETokenizer, CharTokenizer, build_tokenizer, text_lines

SHARED = default_shared_data_dir()
WT2 = SHARED / "wikitext-2"
needs_shared = pytest.mark.skipif(
    not (WT2 / "valid.txt").is_file() or not (WT2 / "test.txt").is_file(),
    reason=f"shared WikiText-2 files not found under {WT2} (set LAYER_TYING_SHARED_DATA)",
)

TEXT = (
    " = Valkyria Chronicles III = \n"
    "\n"
    " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video game .\n"
    " The game began development in 2010 , carrying over a large portion of the work .\n"
) * 40


def write_splits(folder: Path, names: dict[str, str], texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in names.items():
        (folder / name).write_text(texts[split], encoding="utf-8")
    return folder


SPLIT_TEXTS = {"train": TEXT, "valid": TEXT[:500], "test": TEXT[500:1500]}
TXT_NAMES = {s: f"{s}.txt" for s in ("train", "valid", "test")}


# ------------------------------------------------------------------ synthetic source


def brute_force_nll(src: HMMSource, window: np.ndarray) -> np.ndarray:
    """-log p(x[t+1] | x[0..t]) by summing over every hidden path of every prefix."""
    k = src.n_states
    prefix_prob = []
    for n in range(1, len(window) + 1):
        total = 0.0
        for path in itertools.product(range(k), repeat=n):
            p = src.stationary[path[0]] * src.emission[path[0], window[0]]
            for t in range(1, n):
                p *= src.transition[path[t - 1], path[t]] * src.emission[path[t], window[t]]
            total += p
        prefix_prob.append(total)
    prefix_prob = np.array(prefix_prob)
    return -np.log(prefix_prob[1:] / prefix_prob[:-1])


@pytest.mark.parametrize("dense", [False, True])
def test_window_nll_matches_brute_force(dense: bool) -> None:
    rng = np.random.default_rng(7)
    if dense:  # every path has positive probability
        src = HMMSource(rng.dirichlet(np.ones(3), size=3), rng.dirichlet(np.ones(4), size=3))
    else:
        src = HMMSource.from_seed(3, vocab_size=6, n_states=4, n_next=2, n_emit=3)
    windows = src.sample(5 * 6, rng).reshape(5, 6)
    nll = src.window_nll(windows.astype(np.uint16))
    assert nll.shape == (5, 5)
    for w, row in zip(windows, nll, strict=True):
        np.testing.assert_allclose(row, brute_force_nll(src, w), rtol=0, atol=1e-9)
    assert src.optimal_ppl(windows) == pytest.approx(np.exp(nll.mean()), rel=1e-12)


def test_hmm_source_structure_and_samples() -> None:
    src = HMMSource.from_seed(0, vocab_size=500)
    assert src.n_states == 16 and src.vocab_size == 500
    np.testing.assert_allclose(src.stationary @ src.transition, src.stationary, atol=1e-12)
    assert ((src.transition > 0).sum(axis=1) <= 3).all()
    assert ((src.emission > 0).sum(axis=1) <= 4).all()
    emitters = (src.emission > 0).sum(axis=0)
    assert (emitters >= 2).any(), "some symbols must be shared by several states"

    t0 = time.perf_counter()
    x = src.sample(200_000, np.random.default_rng(1))
    assert time.perf_counter() - t0 < 2.0
    assert x.min() >= 0 and x.max() < 500
    assert set(np.unique(x)) <= set(np.flatnonzero(emitters))
    marginal = src.stationary @ src.emission
    np.testing.assert_allclose(np.bincount(x, minlength=500) / len(x), marginal, atol=0.01)

    # context helps: the exact conditional perplexity beats the unigram one
    p = marginal[marginal > 0]
    unigram_ppl = np.exp(-(p * np.log(p)).sum())
    windows = x[: 100 * 65].reshape(100, 65)
    assert src.optimal_ppl(windows) < 0.8 * unigram_ppl
    again = HMMSource.from_seed(0, vocab_size=500)
    np.testing.assert_array_equal(again.transition, src.transition)
    assert not np.array_equal(HMMSource.from_seed(1, vocab_size=500).emission, src.emission)


def test_window_nll_rejects_bad_windows() -> None:
    src = HMMSource.from_seed(0, vocab_size=50)
    with pytest.raises(ValueError, match="shape"):
        src.window_nll(np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        src.window_nll(np.full((1, 3), 50))


# ------------------------------------------------------------------ synthetic corpus


def test_synthetic_corpus_cached_and_deterministic(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    c1 = load_corpus("synthetic", vocab_size=256, seed=0, cache_dir=tmp_path)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    c2 = load_corpus("synthetic", vocab_size=256, seed=0, cache_dir=tmp_path)
    warm = time.perf_counter() - t0
    assert warm < 0.5 and warm < cold
    assert (c1.name, c1.tokenizer, c1.vocab_size) == ("synthetic", "synthetic", 256)
    assert isinstance(c1.source, HMMSource)
    sizes = (SYNTHETIC_TRAIN_TOKENS, SYNTHETIC_VALID_TOKENS, SYNTHETIC_TEST_TOKENS)
    for split, n in zip(("train", "valid", "test"), sizes, strict=True):
        a, b = getattr(c1, split), getattr(c2, split)
        assert a.shape == (n,) and a.dtype == np.uint16 and isinstance(b, np.memmap)
        np.testing.assert_array_equal(a, b)
    assert int(c1.train.max()) < 256
    assert not np.array_equal(c1.train[:1000], c1.valid[:1000])
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    # no temp files left behind; the manifest (sizes, sha256) is written last
    assert files == ["manifest.json", "test.npy", "train.npy", "valid.npy"]

    # same seed in a fresh cache: same tokens; another seed: different tokens
    other = synthetic_corpus(0, 256, n_train=5000, n_valid=500, n_test=500,
                             cache_dir=tmp_path / "a")
    again = synthetic_corpus(0, 256, n_train=5000, n_valid=500, n_test=500,
                             cache_dir=tmp_path / "b")
    seed1 = synthetic_corpus(1, 256, n_train=5000, n_valid=500, n_test=500,
                             cache_dir=tmp_path / "a")
    np.testing.assert_array_equal(other.train, again.train)
    np.testing.assert_array_equal(other.test, again.test)
    assert not np.array_equal(other.train, seed1.train)

    big = synthetic_corpus(0, 70_000, n_train=100, n_valid=10, n_test=10, cache_dir=tmp_path)
    assert big.train.dtype == np.uint32


# ------------------------------------------------------------------ tokenizers


def test_char_tokenizer() -> None:
    tok = CharTokenizer.train("banana band")
    assert tok.chars == " abdn"
    assert tok.vocab_size == 6 and tok.unk_id == 5
    np.testing.assert_array_equal(tok.encode("a nab"), [1, 0, 4, 1, 2])
    np.testing.assert_array_equal(tok.encode("bz€"), [2, 5, 5])
    assert tok.decode(tok.encode("band")) == "band"
    assert tok.name == CharTokenizer.train("dnab ").name != CharTokenizer.train("xyz").name


def test_bpe_tokenizer_trains_caches_and_round_trips(tmp_path: Path) -> None:
    tok = build_tokenizer("bpe", TEXT, vocab_size=300, cache_dir=tmp_path)
    assert isinstance(tok, BPETokenizer)
    assert tok.vocab_size == 300
    assert tok.tok.token_to_id(EOT) is not None
    sample = "The game began in 2010 , Senjō no Valkyria !\nnew words: zebra 42\n"
    ids = tok.encode(sample)
    assert ids.max() < 300 and len(ids) < len(sample.encode("utf-8"))
    assert tok.decode(ids) == sample
    cached = list((tmp_path / "tokenizers").glob("*.json"))
    assert [p.stem for p in cached] == [tok.name]
    again = build_tokenizer("bpe", TEXT, vocab_size=300, cache_dir=tmp_path)
    assert again.name == tok.name
    np.testing.assert_array_equal(again.encode(sample), ids)
    assert build_tokenizer("bpe", TEXT, vocab_size=320, cache_dir=tmp_path).name != tok.name
    with pytest.raises(ValueError, match="vocab_size=100"):
        build_tokenizer("bpe", TEXT, vocab_size=100)


def test_hf_tokenizer_from_local_folder(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    bpe = build_tokenizer("bpe", TEXT, vocab_size=300)
    folder = tmp_path / "my-tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=bpe.tok).save_pretrained(folder)
    data = write_splits(tmp_path / "data", TXT_NAMES, SPLIT_TEXTS)
    c = load_corpus("text", data_dir=data, tokenizer=str(folder), cache_dir=tmp_path / "cache")
    assert c.vocab_size == 300 and c.tokenizer.startswith("hf-dir:")
    np.testing.assert_array_equal(c.valid, bpe.encode(SPLIT_TEXTS["valid"]))


def test_unknown_tokenizer_name_fails_with_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-tokenizer-xyz") as err:
        build_tokenizer("no-such-tokenizer-xyz", TEXT)
    assert '"bpe", "char"' in str(err.value)


# ------------------------------------------------------------------ text folders


def test_text_folder_both_naming_schemes(tmp_path: Path) -> None:
    plain = write_splits(tmp_path / "plain", TXT_NAMES, SPLIT_TEXTS)
    wiki = write_splits(tmp_path / "wiki", {s: f"wiki.{s}.tokens" for s in TXT_NAMES},
                        SPLIT_TEXTS)
    raw = write_splits(tmp_path / "raw", {s: f"wiki.{s}.raw" for s in TXT_NAMES}, SPLIT_TEXTS)
    corpora = [load_corpus("text", data_dir=d, tokenizer="char", cache_dir=tmp_path / "c")
               for d in (plain, wiki, raw)]
    tok = CharTokenizer.train(SPLIT_TEXTS["train"])
    for c in corpora:
        assert c.name == "text" and c.vocab_size == tok.vocab_size and c.tokenizer == tok.name
        np.testing.assert_array_equal(c.test, tok.encode(SPLIT_TEXTS["test"]))
        assert c.train.dtype == np.uint16
    bpe = load_corpus("text", data_dir=plain, vocab_size=300, cache_dir=tmp_path / "c")
    assert bpe.tokenizer.startswith("bpe-") and bpe.vocab_size == 300


def test_char_tokenizer_unknown_chars_in_valid(tmp_path: Path) -> None:
    texts = {"train": "abc abc\n", "valid": "abz\n", "test": "cab\n"}
    c = load_corpus("text", data_dir=write_splits(tmp_path / "d", TXT_NAMES, texts),
                    tokenizer="char", cache_dir=tmp_path)
    assert c.vocab_size == 6  # "\n", " ", a, b, c and <unk>
    np.testing.assert_array_equal(c.valid, [2, 3, 5, 0])


def test_text_cache_hit_is_fast_and_keyed_by_text(tmp_path: Path) -> None:
    data = write_splits(tmp_path / "d", TXT_NAMES, SPLIT_TEXTS)
    c1 = load_corpus("text", data_dir=data, vocab_size=300, cache_dir=tmp_path / "c")
    t0 = time.perf_counter()
    c2 = load_corpus("text", data_dir=data, vocab_size=300, cache_dir=tmp_path / "c")
    assert time.perf_counter() - t0 < 0.5
    assert isinstance(c2.train, np.memmap)
    np.testing.assert_array_equal(c1.train, c2.train)
    (data / "test.txt").write_text(SPLIT_TEXTS["test"] + " extra words\n", encoding="utf-8")
    c3 = load_corpus("text", data_dir=data, vocab_size=300, cache_dir=tmp_path / "c")
    assert len(c3.test) > len(c1.test)
    assert len(list((tmp_path / "c" / "corpora").iterdir())) == 2


# ------------------------------------------------------------------ offline WikiText-2


@needs_shared
def test_offline_wikitext2_split(tmp_path: Path) -> None:
    valid_bytes, test_bytes = (WT2 / "valid.txt").read_bytes(), (WT2 / "test.txt").read_bytes()
    assert hashlib.sha256(valid_bytes).hexdigest().startswith("f0737ed31fc13290")
    assert hashlib.sha256(test_bytes).hexdigest().startswith("d790b833ef8cf03a")
    folder = offline_wikitext2(tmp_path / "wt2")
    assert (folder / "train.txt").read_bytes() == valid_bytes
    lines = text_lines(test_bytes.decode("utf-8"))
    new_valid = (folder / "valid.txt").read_text(encoding="utf-8")
    new_test = (folder / "test.txt").read_text(encoding="utf-8")
    assert text_lines(new_valid) == lines[: len(lines) // 2]
    assert text_lines(new_test) == lines[len(lines) // 2 :]
    assert (new_valid + new_test).encode("utf-8") == test_bytes

    c = load_corpus("wikitext-2", data_dir=folder, cache_dir=tmp_path / "cache")
    assert c.name == "wikitext-2" and c.vocab_size == 8192 and c.train.dtype == np.uint16
    assert 200_000 < len(c.train) < 400_000 and len(c.valid) > 100_000 and len(c.test) > 100_000
    t0 = time.perf_counter()
    load_corpus("wikitext-2", data_dir=folder, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - t0 < 0.5


def test_offline_wikitext2_missing_shared_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="valid.txt"):
        offline_wikitext2(tmp_path / "out", shared_data=tmp_path / "nowhere")


def test_default_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYER_TYING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LAYER_TYING_SHARED_DATA", str(tmp_path / "shared"))
    assert default_cache_dir() == tmp_path / "cache"
    assert default_shared_data_dir() == tmp_path / "shared"
    monkeypatch.delenv("LAYER_TYING_CACHE")
    monkeypatch.delenv("LAYER_TYING_SHARED_DATA")
    assert default_cache_dir() == Path.home() / ".cache" / "layer-tying-gym"
    repo_parent = Path(corpus_mod.__file__).resolve().parents[3]
    assert default_shared_data_dir() == repo_parent / "shared" / "data"


# ------------------------------------------------------------------ errors


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset='wikitext-3'.*synthetic"):
        load_corpus("wikitext-3", cache_dir=tmp_path)


def test_synthetic_rejects_tokenizer_and_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tokenizer='bpe'"):
        load_corpus("synthetic", tokenizer="bpe", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="data_dir="):
        load_corpus("synthetic", data_dir=tmp_path, cache_dir=tmp_path)


def test_text_needs_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data_dir=FOLDER"):
        load_corpus("text", cache_dir=tmp_path)


def test_data_dir_missing_or_not_a_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="missing"):
        load_corpus("text", data_dir=missing, cache_dir=tmp_path)
    a_file = tmp_path / "file.txt"
    a_file.write_text("hello\n")
    with pytest.raises(ValueError, match="file.txt.*not a folder"):
        load_corpus("text", data_dir=a_file, cache_dir=tmp_path)


def test_missing_split_file_names_paths(tmp_path: Path) -> None:
    data = write_splits(tmp_path / "d", {"train": "train.txt", "test": "test.txt"}, SPLIT_TEXTS)
    with pytest.raises(FileNotFoundError) as err:
        load_corpus("text", data_dir=data, tokenizer="char", cache_dir=tmp_path)
    msg = str(err.value)
    for name in ("valid.txt", "wiki.valid.tokens", "wiki.valid.raw"):
        assert str(data / name) in msg


def test_empty_split(tmp_path: Path) -> None:
    data = write_splits(tmp_path / "d", TXT_NAMES, {**SPLIT_TEXTS, "valid": "  \n\n"})
    with pytest.raises(ValueError, match=r"valid\.txt is empty"):
        load_corpus("text", data_dir=data, tokenizer="char", cache_dir=tmp_path)


@pytest.mark.parametrize("payload", [b"abc\x00def\n", b"caf\xe9 latin-1\n"])
def test_binary_file_rejected(tmp_path: Path, payload: bytes) -> None:
    data = write_splits(tmp_path / "d", TXT_NAMES, SPLIT_TEXTS)
    (data / "train.txt").write_bytes(payload)
    with pytest.raises(ValueError, match=r"train\.txt"):
        load_corpus("text", data_dir=data, tokenizer="char", cache_dir=tmp_path)


def test_wikitext_without_data_dir_fails_fast_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        load_corpus("wikitext-2", cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5.0
    msg = str(err.value)
    for needle in ("dataset='wikitext-2'", "offline mode", "data_dir=FOLDER", "offline_wikitext2"):
        assert needle in msg


def test_hub_check_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://10.255.255.1:9")  # unroutable
    t0 = time.perf_counter()
    assert corpus_mod._hub_reachable(timeout=0.3) is False
    assert time.perf_counter() - t0 < 2.0
