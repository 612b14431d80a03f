"""Saving a trained `TiedModel`, expanded or compact, and a run's model as a self-contained folder.

- **Expanded** (`save_expanded`): a standard Hugging Face folder that the family's own
  class loads (`GPT2LMHeadModel`, `LlamaForCausalLM`, `BertForMaskedLM`,
  `ViTForImageClassification` `.from_pretrained`); every tied position gets its own
  copy of its root's weights, so any tooling of the family can use it. Given a tokenizer
  (in Hugging Face form, `hf_tokenizer`) and a model card, the folder also holds the
  tokenizer files and `README.md`, so that `AutoTokenizer.from_pretrained` and
  `pipeline("text-generation", model=folder)` work on it alone.
- **Compact** (`save_compact` / `load_compact`): only the root
  blocks, the embeddings and the final norm (`weights.safetensors`) plus
  `config.json` holding the Hugging Face config, the tie map and the tie mode. It is
  smaller than the expanded folder by about the tied fraction of parameters,
  and loads back into a `TiedModel` that gives the same logits.
- **A run's tokenizer** (`run_tokenizer`): the tokenizer of its corpus in Hugging Face
  form (`corpus_tokenizer`), saved beside the expanded model with the model card that the
  harness writes from the run's result (`agents.runs.card`). The synthetic corpus has no
  tokenizer: its ids have no text, and the note says so; nor have image sets.

Everything is written atomically (`tying_env.files`): what Hugging Face's
`save_pretrained` writes goes to a staging folder first, and each file is then moved
into place with `atomic_write`. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig

from tying_env.files import (
    atomic_write,
    check_manifest,
    write_failed,
    write_json,
    write_text,
)
from tying_env.models import TiedModel, as_config

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tying_env.data.corpus import Corpus
    from tying_env.data.tokenizer import Tokenizer
    from tying_env.presets import EnvConfig

COMPACT_FORMAT = "layer-tying-gym/compact"
COMPACT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
# what an earlier save into the same folder may have left that this one does not write
HF_EXTRA_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
                  "generation_config.json", CARD_NAME)
SYNTHETIC_NOTE = (
    "The synthetic corpus's token ids have no text: they are the symbols of a seeded "
    "hidden Markov source (`tying_env.data.synthetic.HMMSource`), so there is no tokenizer "
    "and none is saved here. Give the model token ids in `[0, vocab_size)` directly."
)
# ------------------------------------------------------------------ expanded


def save_expanded(model: TiedModel, path: str | Path, *,
                  tokenizer: PreTrainedTokenizerBase | None = None,
                  card: str | None = None) -> Path:
    """Save `model` untied as a standard HF folder (the family's class `.from_pretrained`).

    For a causal LM (GPT-2, Llama) the saved copy's special token ids follow `tokenizer`:
    its end-of-text token is `eos_token_id` and `bos_token_id`, and `pad_token_id` unless
    it has a pad token of its own. Without one (or for a tokenizer without an
    end-of-text token) no id has a special meaning, and none is set.
    `generation_config.json` holds the same ids and `max_new_tokens` = half the context
    (`n_positions`), so that generating with the defaults fits the context after a prompt
    of up to that many tokens. `tokenizer` is saved beside the weights
    (`save_pretrained`, with `model_max_length` = the context),
    `card` as `README.md`.
    """
    path = Path(path)
    hf = model.to_hf()
    n_positions = getattr(hf.config, "max_position_embeddings", None)
    if model.family.task == "causal-lm":
        eos = bos = pad = None
        if tokenizer is not None:
            eos = tokenizer.eos_token_id
            bos = eos if tokenizer.bos_token_id is None else tokenizer.bos_token_id
            pad = eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        hf.config.bos_token_id, hf.config.eos_token_id, hf.config.pad_token_id = bos, eos, pad
        hf.config.use_cache = True  # a copy to generate with: keep the keys and values
        hf.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos,
                                                pad_token_id=pad,
                                                max_new_tokens=max(1, n_positions // 2))
    with _staging(path) as stage:
        try:
            hf.save_pretrained(stage)
            if tokenizer is not None:
                if n_positions is not None:
                    tokenizer.model_max_length = int(n_positions)
                tokenizer.save_pretrained(stage)
                _portable_tokenizer_config(stage / "tokenizer_config.json")
        except OSError as e:
            raise write_failed(path, e) from e
        _publish(stage, path)
    if card is not None:
        write_text(path / CARD_NAME, card)
    return path


@contextlib.contextmanager
def _staging(path: Path) -> Iterator[Path]:
    """A temporary folder beside `path` (on the same file system), removed afterwards."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise write_failed(path, e) from e
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, path: Path) -> None:
    """Move each file of `stage` into `path` atomically; drop what an earlier save left."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(path, e) from e
    written = set()
    for staged in sorted(p for p in stage.iterdir() if p.is_file()):
        atomic_write(path / staged.name, lambda tmp, staged=staged: os.replace(staged, tmp))
        written.add(staged.name)
    for name in set(HF_EXTRA_FILES) - written:
        (path / name).unlink(missing_ok=True)


def _portable_tokenizer_config(config_file: Path) -> None:
    """Name the tokenizer class `PreTrainedTokenizerFast`, which every `transformers`
    release this package supports knows (recent ones call it `TokenizersBackend`)."""
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        write_json(config_file, config)


# ------------------------------------------------------------------ compact


def compact_state_dict(model: TiedModel) -> dict[str, torch.Tensor]:
    """Root blocks, embeddings and final norm; a tensor shared by two keys is kept once."""
    state, seen = {}, set()
    for key, value in model.net.state_dict().items():
        ptr = (value.device, value.untyped_storage().data_ptr(), value.storage_offset())
        if ptr in seen:  # the LM head tied to the input embeddings
            continue
        seen.add(ptr)
        state[key] = value.detach().to("cpu").contiguous().clone()
    return state


def save_compact(model: TiedModel, path: str | Path) -> Path:
    """Save `model` with only its root blocks (see the module docstring)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = compact_state_dict(model)
    meta = {"format": COMPACT_FORMAT, "version": str(COMPACT_VERSION)}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(weights, str(tmp), metadata=meta))
    write_json(path / CONFIG_NAME, {
        "format": COMPACT_FORMAT,
        "version": COMPACT_VERSION,
        "tie_map": list(model.ties),
        "tie_mode": model.tie_mode,
        "config": {**model.config.to_dict(), "model_type": model.family.name},
    })
    return path


def load_compact(path: str | Path, device: str | torch.device = "cpu") -> TiedModel:
    """Load a folder written by `save_compact` into a `TiedModel` (in eval mode)."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: {path} is not a compact export "
                                    f"(expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    meta = json.loads(config_file.read_text(encoding="utf-8"))
    if meta.get("format") != COMPACT_FORMAT or meta.get("version") != COMPACT_VERSION:
        raise ValueError(f"{config_file} has format={meta.get('format')!r} "
                         f"version={meta.get('version')!r}; expected {COMPACT_FORMAT!r} "
                         f"version {COMPACT_VERSION}")
    model = TiedModel(as_config(meta["config"]), meta["tie_mode"], ties=meta["tie_map"])
    weights = load_file(str(weights_file))
    missing, unexpected = model.net.load_state_dict(weights, strict=False)
    tied_aliases = set(model.net.state_dict()) - set(compact_state_dict(model))
    if unexpected or set(missing) - tied_aliases:
        raise ValueError(f"{weights_file} does not match tie map {meta['tie_map']}: "
                         f"missing {sorted(set(missing) - tied_aliases)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.to(device).eval()


# ------------------------------------------------------------------ tokenizers


def hf_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerBase:
    """`tok` (a `tying_env.data.tokenizer` tokenizer) as a Hugging Face tokenizer giving
    the same ids.

    - byte-level BPE: a `PreTrainedTokenizerFast` wrapping the trained `tokenizers`
      model, its end-of-text token `<|endoftext|>` as `eos_token`, `bos_token` and
      `pad_token`; it adds no special tokens when encoding, as in training;
    - characters: a `tokenizers` word-level model over single characters, the last id
      for unknown characters (decoded as `\\ufffd`, like `CharTokenizer`); no
      end-of-text token;
    - a Hugging Face tokenizer: itself.
    """
    from transformers import PreTrainedTokenizerFast

    from tying_env.data.tokenizer import EOT, BPETokenizer, CharTokenizer, HFTokenizer

    if isinstance(tok, HFTokenizer):
        return tok.tok
    if isinstance(tok, BPETokenizer):
        if tok.tok.token_to_id(EOT) is None:
            return PreTrainedTokenizerFast(tokenizer_object=tok.tok)
        return PreTrainedTokenizerFast(tokenizer_object=tok.tok, eos_token=EOT, bos_token=EOT,
                                       pad_token=EOT)
    if isinstance(tok, CharTokenizer):
        from tokenizers import Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as RawTokenizer

        vocab = {c: i for i, c in enumerate(tok.chars)}
        unk = "\ufffd" if "\ufffd" not in vocab else "<unk>"
        vocab[unk] = tok.unk_id
        raw = RawTokenizer(models.WordLevel(vocab, unk_token=unk))
        raw.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        raw.decoder = decoders.Fuse()
        return PreTrainedTokenizerFast(tokenizer_object=raw)
    raise TypeError(f"no Hugging Face form for a tokenizer of type {type(tok).__name__}")


def corpus_tokenizer(corpus: Corpus, cfg: EnvConfig,
                     cache_dir: str | Path | None = None) -> tuple[Tokenizer | None, str]:
    """The tokenizer `corpus` was tokenized with, and a sentence for the model card.

    A `Corpus` keeps only its tokenizer's identity (`Corpus.tokenizer`), so the
    tokenizer is found again: a trained BPE in the tokenizer cache (`cache_dir`, default
    `tying_env.data.corpus.default_cache_dir()`), else rebuilt from the settings `cfg`
    (a character tokenizer re-reads the training text). Only a tokenizer whose identity
    matches is returned. The synthetic corpus has none (its ids have no text): the
    result is `None` and the sentence says so; a tokenizer that cannot be had is `None`
    with the reason.
    """
    from tokenizers import Tokenizer as RawTokenizer

    from tying_env.data.corpus import default_cache_dir
    from tying_env.data.tokenizer import BPETokenizer, build_tokenizer
    from tying_env.errors import DataUnavailableError, WriteFailedError

    if not hasattr(corpus, "tokenizer"):  # an image set
        return None, "Images need no tokenizer: the model takes pixel values."
    if corpus.source is not None or corpus.tokenizer == "synthetic":
        return None, SYNTHETIC_NOTE
    name = corpus.tokenizer
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tok: Tokenizer | None = None
    cached = cache / "tokenizers" / f"{name}.json"
    if name.startswith("bpe-") and not check_manifest(cached.with_suffix(".manifest"),
                                                      [cached.name]):
        try:
            tok = BPETokenizer(RawTokenizer.from_file(str(cached)), name)
        except Exception:  # `tokenizers` raises a bare Exception on a bad file
            tok = None
    if tok is None:
        kind = cfg.tokenizer or "bpe"
        try:
            text = _train_text(cfg) if kind in ("bpe", "char") else ""
            tok = build_tokenizer(kind, text, vocab_size=cfg.vocab_size, cache_dir=cache)
        except WriteFailedError:
            raise
        except (OSError, ValueError, DataUnavailableError) as e:
            return None, (f"The tokenizer `{name}` could not be found again "
                          f"({type(e).__name__}: {e}); no tokenizer is saved here.")
    if tok.name != name:
        return None, (f"The tokenizer rebuilt from the settings (`{tok.name}`) is not the "
                      f"one the corpus was tokenized with (`{name}`); no tokenizer is saved "
                      "here.")
    return tok, _tokenizer_note(tok)


def _train_text(cfg: EnvConfig) -> str:
    """The training text of a text corpus, read again from its source."""
    from tying_env.data import corpus as corpus_mod

    if cfg.data_dir is not None:
        return corpus_mod.read_split_files(cfg.data_dir)["train"]
    return corpus_mod._hf_wikitext(cfg.dataset)["train"]


def _tokenizer_note(tok: Tokenizer) -> str:
    from tying_env.data.tokenizer import EOT, BPETokenizer, CharTokenizer

    if isinstance(tok, BPETokenizer):
        return (f"A byte-level BPE (GPT-2 style pre-tokenisation) trained on the training "
                f"split, {tok.vocab_size} tokens. Its end-of-text token `{EOT}` (id "
                f"{tok.tok.token_to_id(EOT)}) is `eos_token`, `bos_token` and `pad_token`. "
                "Encoding adds no special tokens, as in training, where the token stands "
                "only where the text itself holds it.")
    if isinstance(tok, CharTokenizer):
        return (f"One id per distinct character of the training text ({tok.vocab_size - 1} "
                f"characters), plus a last id (`{tok.unk_id}`) for characters it has not "
                "seen, decoded as `\ufffd`. It has no end-of-text token, so generation "
                "stops only at `max_new_tokens`.")
    return f"The Hugging Face tokenizer the corpus was tokenized with (`{tok.name}`)."


# ------------------------------------------------------------------ a run's model


def run_tokenizer(model: TiedModel, corpus: Corpus, cfg: EnvConfig,
                  cache_dir: str | Path | None = None
                  ) -> tuple[PreTrainedTokenizerBase | None, str]:
    """The tokenizer to save beside a run's model (the corpus's, in Hugging Face form; None
    for the synthetic corpus and image sets) and a note for people on how to use it."""
    tok, note = corpus_tokenizer(corpus, cfg, cache_dir)
    hf_tok = None if tok is None else hf_tokenizer(tok)
    if model.family.task == "masked-lm" and hf_tok is not None:
        note += (f" The model's `[MASK]` token is id {model.task.mask_id}, the last row of its "
                 "embedding, which this tokenizer does not know: put the id in by hand.")
    return hf_tok, note


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Hugging Face's warnings and progress bars hidden, for code whose result or its own
    progress bar reports what they would say (the export, the fine-tune)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
