"""A saved model as a sequence classifier, its tokenizer, and examples as token ids.

The model comes from a folder:

- a Hugging Face folder (a run's `model/`, or any local checkpoint of a text model that
  has a sequence-classification class: GPT-2, Llama, BERT, ...): loaded with
  `AutoModelForSequenceClassification.from_pretrained`, offline. Every position has its
  own weights (`ties="untie"`): such a folder keeps no tie map;
- a compact folder (a run's `compact/`, `tying_env.export.save_compact`): its weights
  go into the family's classification model, and by default the tie map is kept
  (`ties="keep"`): a tied position holds a `TiedBlock` that runs its root's block in the
  folder's tie mode (`copy`: the root learns only from its own position; `share`: from
  all of them), so only roots, embeddings, final norm and head are trained and given
  optimizer state. `ties="untie"` fine-tunes every position on its own copy instead.

The head (`score` for GPT-2 and Llama, `classifier` and the pooler for BERT) is new,
initialised from torch's current random state. A causal LM is pooled at each example's
last real token, found from the attention mask (right padding), so the pad id never
matters; an encoder uses its own pooling (BERT: the first position).

The tokenizer (`load_tokenizer`) is, in order: the `tokenizer` setting (a local folder or
a cached name, as `tying_env.data.tokenizer.HFTokenizer.load`; or `"ids"`); the model
folder's own; for a compact folder, the run's `model/` beside it. A run on the synthetic
corpus has none (its ids have no text): its examples are then written as token ids
separated by spaces (`"ids"`). A pair of texts is joined by the tokenizer's own template
when it has one (BERT's `[CLS] a [SEP] b [SEP]`), else with its separator or end-of-text
token between them (none for `"ids"`); the longer text is cut first to fit
`max_length`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tying_env.errors import MissingDataError, SettingError
from tying_env.finetune.glue import Examples

TIES = ("keep", "untie")
IDS = "ids"  # the tokenizer setting for texts written as token ids
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "tokenizer.model")


@dataclass
class Classifier:
    """A sequence-classification model and how it is run (see the module docstring)."""

    model: nn.Module
    model_type: str
    source: str  # "hf" or "compact"
    ties: str
    tie_map: list[int] | None
    tie_mode: str | None
    untied_params: int  # parameters of the same classifier with every position its own
    new_weights: list[str] = field(default_factory=list)  # initialised here: the head

    @property
    def pooling(self) -> str:
        """`"last"` (the last real token, for causal LMs) or `"first"` (the model's own)."""
        return "last" if hasattr(self.model, "score") else "first"

    def logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, labels) of right-padded `ids` with attention `mask`."""
        if self.pooling == "last":
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = mask.sum(dim=1) - 1
            return self.model.score(hidden[torch.arange(len(ids), device=ids.device), last])
        return self.model(input_ids=ids, attention_mask=mask).logits

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Unique trainable tensors (a tied position owns none)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())


def load_classifier(path: str | Path, n_labels: int, ties: str | None = None) -> Classifier:
    """The model in folder `path` (HF or compact) with a new `n_labels`-way head; `ties`
    defaults to `"keep"` for a compact folder and `"untie"` for an HF one."""
    from transformers import AutoConfig

    from tying_env.export import COMPACT_FORMAT, load_compact, quiet_hf

    folder = model_folder(path)
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise SettingError("model", f"{folder / 'config.json'} is not JSON ({e})") from e
    compact = meta.get("format") == COMPACT_FORMAT
    if ties is not None and ties not in TIES:
        raise SettingError("ties", f"ties={ties!r} is unknown; allowed: {', '.join(TIES)}")
    ties = ties or ("keep" if compact else "untie")
    if ties == "keep" and not compact:
        raise SettingError("ties", f"ties='keep' needs a tie map, and the Hugging Face folder "
                                   f"{folder} has none (every position has its own copy): pass "
                                   "the run's compact/ folder, or ties='untie'")
    with quiet_hf():  # the new head's "newly initialized" warning: the result names it
        try:
            tied = load_compact(folder) if compact else None
            config = tied.config if compact else AutoConfig.from_pretrained(
                folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise SettingError("model", f"{folder} does not load as a "
                                        f"{'compact export' if compact else 'Hugging Face model'}"
                                        f" ({type(e).__name__}: {e})") from e
        _check_text_model(config.model_type, folder)
        if compact:
            model, new = _from_lm(tied.to_hf(), n_labels)
            tie_map, tie_mode = list(tied.ties), tied.tie_mode
        else:
            model, new = _from_folder(folder, n_labels)
            tie_map = tie_mode = None
    if getattr(model.config, "is_decoder", False) and not hasattr(model, "score"):
        raise SettingError("model", f"{folder} holds a causal {model.config.model_type} "
                                    "(is_decoder=True), whose classification class pools the "
                                    "first token, which sees only itself: not supported")
    untied = sum(p.numel() for p in model.parameters())
    if ties == "keep":
        _keep_ties(model, tie_map, tie_mode)
    return Classifier(model, model.config.model_type, "compact" if compact else "hf", ties,
                      tie_map, tie_mode, untied, new)


def model_folder(path: str | Path) -> Path:
    """`path` as a model folder (it holds `config.json`), or `MissingDataError`."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MissingDataError("model", f"model={str(path)!r} is not a folder; expected a run's "
                                        "model/ or compact/ folder, or a Hugging Face checkpoint "
                                        "folder")
    if not (folder / "config.json").is_file():
        raise MissingDataError("model", f"model={str(path)!r} has no config.json: it is not a "
                                        "Hugging Face folder nor a compact export")
    return folder


def _check_text_model(model_type: str, folder: Path) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as NAMES,
    )

    if model_type not in NAMES:
        raise SettingError("model", f"{folder} holds a {model_type!r} model, which has no "
                                    "sequence-classification class; GLUE needs a text model "
                                    "such as gpt2, llama or bert")


def _from_folder(folder: Path, n_labels: int) -> tuple[nn.Module, list[str]]:
    from transformers import AutoModelForSequenceClassification

    model, info = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=n_labels, local_files_only=True, output_loading_info=True)
    return model, sorted(info["missing_keys"])


def _from_lm(lm: nn.Module, n_labels: int) -> tuple[nn.Module, list[str]]:
    """The classification model of `lm`'s family holding `lm`'s backbone weights."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(lm.config)
    config.num_labels = n_labels
    model = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = model.base_model.load_state_dict(lm.base_model.state_dict(),
                                                           strict=False)
    if unexpected:
        raise ValueError(f"backbone weights {unexpected} have no place in "
                         f"{type(model).__name__}")
    prefix = model.base_model_prefix + "."
    head = [k for k in model.state_dict() if not k.startswith(prefix)]
    return model.eval(), sorted([prefix + k for k in missing] + head)


def _keep_ties(model: nn.Module, tie_map: list[int], tie_mode: str) -> None:
    """Replace each tied position's block by a `TiedBlock` running its root's block."""
    from tying_env.models.registry import FAMILIES
    from tying_env.models.tied import TiedBlock
    from tying_env.ties import TIE_MODES

    if tie_mode not in TIE_MODES:
        raise SettingError("ties", f"the compact folder's tie mode {tie_mode!r} cannot be kept "
                                   f"(known: {', '.join(TIE_MODES)}); pass ties='untie'")
    family = FAMILIES[model.config.model_type]
    blocks = family.block_list(model)
    family.set_block_list(model, nn.ModuleList(
        blocks[i] if r == i else TiedBlock(blocks[r], tie_mode) for i, r in enumerate(tie_map)))


# ------------------------------------------------------------------ tokenizer


class IdsTokenizer:
    """Texts written as token ids separated by white space (`"3 17 5"`), for a model
    without a text tokenizer (the synthetic corpus's)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str, where: str) -> list[int]:
        try:
            ids = [int(t) for t in text.split()]
        except ValueError:
            raise SettingError("tokenizer", f"{where}: {text[:60]!r} is not token ids separated "
                                            "by spaces, as tokenizer='ids' reads texts") from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise SettingError("tokenizer", f"{where}: token id(s) {bad[:5]} outside "
                                            f"[0, {self.vocab_size}), the model's vocabulary")
        return ids


@dataclass
class TextEncoder:
    """Turns examples into token ids: `tokenizer` (an HF tokenizer or `IdsTokenizer`),
    `name` (where it came from), `pad_id`, and the separator between a pair's texts."""

    tokenizer: Any
    name: str
    pad_id: int
    separator: list[int]

    def encode(self, examples: Examples, max_length: int) -> tuple[list[list[int]], int]:
        """Token ids of each example, at most `max_length` (at least 1) each, and how many
        examples were cut to fit."""
        if isinstance(self.tokenizer, IdsTokenizer):
            columns = [[self.tokenizer.encode(t[c], f"{examples.source} example {n}")
                        for n, t in enumerate(examples.texts)]
                       for c in range(len(examples.texts[0]))]
        elif self.tokenizer.num_special_tokens_to_add(pair=len(examples.texts[0]) == 2) > 0:
            return self._encode_with_template(examples, max_length)
        else:
            columns = [self.tokenizer([t[c] for t in examples.texts],
                                      add_special_tokens=False)["input_ids"]
                       for c in range(len(examples.texts[0]))]
        out, cut = [], 0
        for parts in zip(*columns, strict=True):
            ids = _fit(list(parts), max_length - (len(self.separator) if len(parts) == 2 else 0))
            cut += sum(map(len, ids)) < sum(map(len, parts))
            joined = ids[0] + self.separator + ids[1] if len(ids) == 2 else ids[0]
            out.append(joined or [self.pad_id])
        return out, cut

    def _encode_with_template(self, examples: Examples,
                              max_length: int) -> tuple[list[list[int]], int]:
        columns = [[t[c] for t in examples.texts] for c in range(len(examples.texts[0]))]
        full = self.tokenizer(*columns)["input_ids"]
        long = [n for n, ids in enumerate(full) if len(ids) > max_length]
        if long:
            cut = self.tokenizer(*[[col[n] for n in long] for col in columns], truncation=True,
                                 max_length=max_length)["input_ids"]
            for n, ids in zip(long, cut, strict=True):
                full[n] = ids
        return full, len(long)


def _fit(parts: list[list[int]], budget: int) -> list[list[int]]:
    """Cut the longer of one or two id lists first until their lengths sum to `budget`."""
    if len(parts) == 1:
        return [parts[0][:budget]]
    a, b = parts
    if len(a) + len(b) <= budget:
        return [a, b]
    short = min(len(a), len(b))
    if 2 * short <= budget:
        keep = (budget - short, short) if len(a) >= len(b) else (short, budget - short)
    else:
        keep = ((budget + 1) // 2, budget // 2)
    return [a[:keep[0]], b[:keep[1]]]


def load_tokenizer(setting: str | None, model_path: str | Path, vocab_size: int) -> TextEncoder:
    """The tokenizer for the model in `model_path` (see the module docstring)."""
    from tying_env.data.tokenizer import HFTokenizer

    folder = Path(model_path).expanduser()
    if setting == IDS:
        return TextEncoder(IdsTokenizer(vocab_size), IDS, 0, [])
    if setting is not None:
        tok, name = HFTokenizer.load(setting).tok, str(setting)
    else:
        found = next((f for f in (folder, folder.parent / "model") if _has_tokenizer(f)), None)
        if found is None:
            raise SettingError("tokenizer", f"{folder} has no tokenizer (a run on the synthetic "
                                            "corpus has none: its ids have no text), nor has "
                                            f"{folder.parent / 'model'}. Pass tokenizer='ids' "
                                            "and write each text as token ids separated by "
                                            f"spaces, in [0, {vocab_size}); or tokenizer=FOLDER "
                                            "(a local tokenizer folder or cached name)")
        tok, name = HFTokenizer.load(str(found)).tok, str(found)
    if len(tok) > vocab_size:
        raise SettingError("tokenizer", f"the tokenizer {name} has {len(tok)} tokens but the "
                                        f"model's embedding has {vocab_size} rows: it is not "
                                        "this model's tokenizer")
    sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    pad = next((i for i in (tok.pad_token_id, tok.eos_token_id) if i is not None), 0)
    return TextEncoder(tok, name, int(pad), [] if sep is None else [int(sep)])


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES)
