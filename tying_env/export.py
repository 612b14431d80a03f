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
- **A run's model** (`save_run_model`): the expanded folder of a run's final model
  with the tokenizer of its corpus (`corpus_tokenizer`) and a model card written from
  the run's `result.json` (`model_card`). The synthetic corpus has no tokenizer: its
  ids have no text, and the card says so; nor have image sets.

Everything is written atomically (`tying_env.files`): what Hugging Face's
`save_pretrained` writes goes to a staging folder first, and each file is then moved
into place with `atomic_write`. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig

from tying_env.files import (
    atomic_write,
    check_manifest,
    to_jsonable,
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
CITATION = """@inproceedings{hay2024dynamic,
  title     = {Dynamic Layer Tying for Parameter-Efficient Transformers},
  author    = {Hay, Tamir David and Wolf, Lior},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024}
}"""


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


def save_run_model(model: TiedModel, path: str | Path, *, corpus: Corpus, cfg: EnvConfig,
                   result: dict[str, Any], cache_dir: str | Path | None = None,
                   compact: str | Path | None = None) -> Path:
    """A run's final model as a self-contained Hugging Face folder in `path`.

    `save_expanded` with the corpus's tokenizer (`corpus_tokenizer`, in Hugging Face
    form) and the model card `model_card`; `result` is the run's `result.json` content,
    `compact` the run's compact folder (`save_compact`), if it has one.
    """
    path = Path(path)
    tok, note = corpus_tokenizer(corpus, cfg, cache_dir)
    hf_tok = None if tok is None else hf_tokenizer(tok)
    if model.family.task == "masked-lm" and hf_tok is not None:
        note += (f" The model's `[MASK]` token is id {model.task.mask_id}, the last row of its "
                 "embedding, which this tokenizer does not know: put the id in by hand.")
    card = model_card(result, folder=path, compact=compact, tokenizer_note=note,
                      has_tokenizer=hf_tok is not None,
                      n_positions=getattr(model.config, "max_position_embeddings", None),
                      family=model.family.name)
    return save_expanded(model, path, tokenizer=hf_tok, card=card)


def _ppl(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.3f}"
    return "not finite" if isinstance(value, float) or value is None else str(value)


def model_card(result: dict[str, Any], *, folder: str | Path, compact: str | Path | None,
               tokenizer_note: str, has_tokenizer: bool, n_positions: int | None,
               family: str = "gpt2") -> str:
    """The `README.md` of a run's `model/` folder, from the run's `result.json` content.

    It names the agent, seed, environment id and settings, the tie map, the final
    validation and test perplexities and the trainable fraction; says that the folder is
    the untied copy of a tied model and how the compact folder relates to it; says how to
    load it (text generation when there is a tokenizer, token ids otherwise, as for the
    synthetic corpus); and gives the license and the method's citation. `folder` and
    `compact` are the paths the loading examples use.
    """
    env = dict(result.get("env_kwargs") or {})
    ties = list(result.get("tie_map") or [])
    roots = sorted(set(ties))
    tied = [i for i, r in enumerate(ties) if r != i]
    folder = Path(folder).as_posix()
    compact_folder = None if compact is None else Path(compact).as_posix()
    from tying_env.models import get_family

    fam = get_family(family)
    cls = fam.model_class.__name__
    causal = fam.task == "causal-lm"
    has_tokenizer = has_tokenizer and fam.data_kind == "text"
    label = FAMILY_LABELS[family]
    max_new = max(1, int(n_positions) // 2) if causal else 0
    dataset = env.get("dataset", "?")
    tags = [family, "layer-tying", "layer-tying-gym", "reinforcement-learning"]
    front = ["---", "library_name: transformers",
             *(["pipeline_tag: text-generation"] if has_tokenizer and causal else []),
             "tags:", *(f"- {t}" for t in tags), "---", ""]
    lines = [
        f"# {result.get('agent')} on {result.get('env_id')}, seed {result.get('seed')}",
        "",
        f"A {label} of {env.get('n_layer')} layers ({env.get('n_embd')} wide, "
        f"{env.get('n_head')} heads"
        + (f", context {n_positions} tokens" if n_positions is not None and fam.data_kind ==
           "text" else "") + ") trained from scratch on "
        f"`{dataset}` during one episode of the layer-tying environment "
        f"`{result.get('env_id')}`, while the agent `{result.get('agent')}` decided which "
        "layers share weights (dynamic layer tying, Hay & Wolf, ICLR 2024). Written by "
        "layer-tying-gym at the end of the run.",
        "",
        "## The run",
        "",
        "| | |",
        "|---|---|",
        f"| agent | `{result.get('agent')}` |",
        f"| agent settings | `{json.dumps(result.get('agent_kwargs') or {})}` |",
        f"| seed | {result.get('seed')} |",
        f"| environment id | `{result.get('env_id')}` |",
        f"| dataset, tokenizer | `{dataset}`, "
        + ("none (the ids have no text) |" if dataset == "synthetic"
           else "none (images) |" if fam.data_kind == "images"
           else f"`{env.get('tokenizer') or 'bpe'}` |"),
        f"| tie mode | `{env.get('tie_mode')}` |",
        f"| decisions | {result.get('decisions')} of {result.get('budget')}"
        f"{'' if result.get('finished', True) else ' (the episode did not finish)'} |",
        f"| optimizer steps | {result.get('train_steps')} |",
        f"| device | `{result.get('device')}` |",
        "",
        "The environment's settings (every field of `tying_env.presets.EnvConfig`):",
        "",
        "```json",
        json.dumps(to_jsonable(env), indent=2, sort_keys=True),
        "```",
        "",
        "## Results",
        "",
        "| | |",
        "|---|---|",
        f"| final validation {METRIC_NAMES[fam.task]} (full split) | "
        f"{_ppl(result.get('final_val_ppl'))} |",
        f"| final test {METRIC_NAMES[fam.task]} (full split) | "
        f"{_ppl(result.get('final_test_ppl'))} |",
    ]
    if result.get("final_val_accuracy") is not None:
        lines += [f"| final validation / test accuracy (full split) | "
                  f"{_frac(result.get('final_val_accuracy'))} / "
                  f"{_frac(result.get('final_test_accuracy'))} |"]
    if result.get("optimal_val_ppl") is not None:
        lines += [f"| optimal validation / test perplexity (the source's own) | "
                  f"{_ppl(result.get('optimal_val_ppl'))} / "
                  f"{_ppl(result.get('optimal_test_ppl'))} |"]
    lines += [
        f"| trainable fraction | {_frac(result.get('trainable_fraction'))} "
        f"({_count(result.get('trainable_params'))} unique of "
        f"{_count(result.get('total_params'))} parameters) |",
        f"| tie map | `{ties}` |",
        "",
        f"The tie map gives, for each layer, the layer whose block it runs: layer `i` uses "
        f"the weights of layer `tie_map[i]`. This model has {len(roots)} distinct blocks "
        f"(roots {roots}) for {len(ties)} layers"
        + (f"; layers {tied} are tied to an earlier one." if tied else "; none is tied.")
    ]
    if result.get("diverged"):
        lines += ["", "**Training diverged** (a non-finite loss): the episode ended early "
                      "and these weights are not usable."]
    for note in result.get("notes") or []:
        lines += ["", f"Note: {note}."]
    lines += [
        "",
        "## The untied copy of a tied model",
        "",
        "This folder is the *untied* copy of the run's final model: every tied layer holds "
        f"its own copy of its root's weights, so it is a plain `{cls}` that any "
        f"{label} tooling loads, with all {_count(result.get('total_params'))} parameters. "
        + (f"At the end of the run only {_count(result.get('trainable_params'))} of them "
           "were distinct. Training this copy further with ordinary tools trains the "
           "copies apart: it no longer has tied layers." if tied else
           "No layer was tied at the end of the run, so all of them were distinct."),
    ]
    if compact_folder is not None:
        lines += [
            "",
            f"The run's `compact/` folder (`{compact_folder}`) holds the same model tied: "
            "only the root blocks, the embeddings and the final norm, plus the tie map and "
            "tie mode, smaller by about the tied fraction. It gives the same logits as this "
            "folder and loads back into a `TiedModel` with `tying_env.export.load_compact` "
            "(needs layer-tying-gym).",
        ]
    lines += ["", "## Tokenizer", "", tokenizer_note, "", "## How to load it", ""]
    if not causal:
        lines += _load_example(fam, cls, folder)
    elif has_tokenizer:
        lines += [
            "```python",
            f"from transformers import AutoTokenizer, {cls}, pipeline",
            "",
            f'generate = pipeline("text-generation", model="{folder}")',
            'print(generate("The")[0]["generated_text"])',
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
            f'model = {cls}.from_pretrained("{folder}")',
            "```",
        ]
    else:
        lines += [
            "```python",
            "import torch",
            f"from transformers import {cls}",
            "",
            f'model = {cls}.from_pretrained("{folder}").eval()',
            "ids = torch.tensor([[1, 2, 3]])  # token ids, not text",
            "with torch.no_grad():",
            "    logits = model(ids).logits",
            "new = model.generate(ids, do_sample=True)  # ids in, ids out",
            "```",
        ]
    if compact_folder is not None:
        lines += [
            "",
            "The tied model (with layer-tying-gym installed):",
            "",
            "```python",
            "from tying_env.export import load_compact",
            "",
            f'tied = load_compact("{compact_folder}")  # a TiedModel, its tie map in tied.ties',
            "```",
        ]
    if causal:
        lines += [
            "",
            f"The context is {n_positions} tokens: a prompt and the tokens generated after it "
            "must fit in it. `generation_config.json` sets `max_new_tokens` to "
            f"{max_new}, so a prompt of up to {n_positions - max_new} tokens fits with the "
            "defaults.",
        ]
    lines += [
        "",
        "## License and citation",
        "",
        "layer-tying-gym, which trained and wrote this model, is under the MIT license. "
        + _data_license(dataset),
        "",
        "The method is dynamic layer tying:",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(front + lines)


METRIC_NAMES = {"causal-lm": "perplexity", "masked-lm": "masked-token perplexity",
                "image-classification": "exp(cross-entropy)"}
FAMILY_LABELS = {"gpt2": "GPT-2", "llama": "Llama", "bert": "BERT", "vit": "ViT"}


def _load_example(fam: Any, cls: str, folder: str) -> list[str]:
    """How to run the saved BERT (token ids in, masked-token logits out) or ViT."""
    if fam.data_kind == "images":
        inputs = ("size, channels = model.config.image_size, model.config.num_channels\n"
                  "pixels = torch.rand(1, channels, size, size) * 2 - 1  # in [-1, 1], as trained",
                  "    logits = model(pixel_values=pixels).logits  # one score per class")
    else:
        inputs = ("ids = torch.tensor([[1, 2, 3]])  # token ids (the [MASK] id: the last one)",
                  "    logits = model(input_ids=ids).logits  # a distribution per position")
    return ["```python", "import torch", f"from transformers import {cls}", "",
            f'model = {cls}.from_pretrained("{folder}").eval()', inputs[0],
            "with torch.no_grad():", inputs[1], "```"]


def _frac(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _data_license(dataset: str) -> str:
    if dataset == "synthetic":
        return ("The training data is the package's own synthetic corpus (generated from a "
                "seed), so no third-party data license applies to the weights.")
    if dataset.startswith("wikitext"):
        return ("The weights are learnt from WikiText, whose text is under CC BY-SA 3.0 "
                "(from Wikipedia): consider that license when you share them.")
    if dataset == "digits":
        return ("The weights are learnt from scikit-learn's copy of the UCI handwritten "
                "digits (CC BY 4.0): consider that license when you share them.")
    if dataset == "cifar10":
        return ("The weights are learnt from CIFAR-10 (Krizhevsky, 2009): consider its "
                "terms of use when you share them.")
    what = "images" if dataset == "image-folder" else "text"
    return (f"The weights are learnt from the {what} in `data_dir`: its license applies to "
            "them.")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"
