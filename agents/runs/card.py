"""The model card: the `README.md` of a run's `model/` folder, written from its result.

It names the agent, seed, environment id and settings, the tie map, the final
validation and test metrics and the trainable fraction; says that the folder is the
untied copy of a tied model and how the compact folder relates to it; says how to load
it; and gives the data's license and the method's citation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tying_env.files import to_jsonable

if TYPE_CHECKING:
    from agents.runs.result import RunResult

CITATION = """@inproceedings{hay2024dynamic,
  title     = {Dynamic Layer Tying for Parameter-Efficient Transformers},
  author    = {Hay, Tamir David and Wolf, Lior},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024}
}"""


def _ppl(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.3f}"
    return "not finite" if isinstance(value, float) or value is None else str(value)


def model_card(result: RunResult, *, folder: str | Path, compact: str | Path | None,
               tokenizer_note: str, has_tokenizer: bool, n_positions: int | None,
               family: str = "gpt2", hyperparameters: Mapping[str, Any] | None = None) -> str:
    """The `README.md` of a run's `model/` folder, from the run's result.

    It names the agent, seed, environment id and settings, the tie map, the final
    validation and test perplexities and the trainable fraction; says that the folder is
    the untied copy of a tied model and how the compact folder relates to it; says how to
    load it (text generation when there is a tokenizer, token ids otherwise, as for the
    synthetic corpus); and gives the license and the method's citation. `folder` and
    `compact` are the paths the loading examples use; `hyperparameters`, when given, are
    the values the agent was built with (its hyperparameter file's, then the run's
    `agent_kwargs` on top), shown beside the settings the run named.
    """
    env = dict(result.env_kwargs)
    ties = list(result.tie_map or [])
    roots = sorted(set(ties))
    tied = [i for i, r in enumerate(ties) if r != i]
    folder = Path(folder).as_posix()
    compact_folder = None if compact is None else Path(compact).as_posix()
    from tying_env.models import get_family

    fam = get_family(family)
    cls = fam.model_class.__name__
    causal = fam.task == "causal-lm"
    has_tokenizer = has_tokenizer and fam.data_kind == "text"
    label = fam.label
    max_new = max(1, int(n_positions) // 2) if causal else 0
    dataset = env.get("dataset", "?")
    tags = [family, "layer-tying", "layer-tying-gym", "reinforcement-learning"]
    front = ["---", "library_name: transformers",
             *(["pipeline_tag: text-generation"] if has_tokenizer and causal else []),
             "tags:", *(f"- {t}" for t in tags), "---", ""]
    lines = [
        f"# {result.agent} on {result.env_id}, seed {result.seed}",
        "",
        f"A {label} of {env.get('n_layer')} layers ({env.get('n_embd')} wide, "
        f"{env.get('n_head')} heads"
        + (f", context {n_positions} tokens" if n_positions is not None and fam.data_kind ==
           "text" else "") + ") trained from scratch on "
        f"`{dataset}` during one episode of the layer-tying environment "
        f"`{result.env_id}`, while the agent `{result.agent}` decided which "
        "layers share weights (dynamic layer tying, Hay & Wolf, ICLR 2024). Written by "
        "layer-tying-gym at the end of the run.",
        "",
        "## The run",
        "",
        "| | |",
        "|---|---|",
        f"| agent | `{result.agent}` |",
        f"| agent settings | `{json.dumps(result.agent_kwargs)}` |",
        *([f"| agent hyperparameters (as built) | `{json.dumps(dict(hyperparameters))}` |"]
          if hyperparameters is not None else []),
        f"| seed | {result.seed} |",
        f"| environment id | `{result.env_id}` |",
        f"| dataset, tokenizer | `{dataset}`, "
        + ("none (the ids have no text) |" if dataset == "synthetic"
           else "none (images) |" if fam.data_kind == "images"
           else f"`{env.get('tokenizer') or 'bpe'}` |"),
        f"| tie mode | `{env.get('tie_mode')}` |",
        f"| decisions | {result.decisions} of {result.budget}"
        f"{'' if result.all_decisions in (None, True) else ' (the episode did not finish)'} |",
        f"| optimizer steps | {result.train_steps} |",
        f"| device | `{result.device}` |",
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
        f"{_ppl(result.final_val_ppl)} |",
        f"| final test {METRIC_NAMES[fam.task]} (full split) | "
        f"{_ppl(result.final_test_ppl)} |",
    ]
    if result.final_val_accuracy is not None:
        lines += [f"| final validation / test accuracy (full split) | "
                  f"{_frac(result.final_val_accuracy)} / "
                  f"{_frac(result.final_test_accuracy)} |"]
    if result.optimal_val_ppl is not None:
        lines += [f"| optimal validation / test perplexity (the source's own) | "
                  f"{_ppl(result.optimal_val_ppl)} / "
                  f"{_ppl(result.optimal_test_ppl)} |"]
    lines += [
        f"| trainable fraction | {_frac(result.trainable_fraction)} "
        f"({_count(result.trainable_params)} unique of "
        f"{_count(result.total_params)} parameters) |",
        *([f"| trainable parameters as the published code counts them | "
           f"{_count(result.published_trainable_params)} (`tie_semantics=\"published\"`: "
           "every trainable position's parameters, a storage that several positions alias "
           "once per position) |"] if result.published_trainable_params is not None else []),
        f"| tie map | `{ties}` |",
        "",
        f"The tie map gives, for each layer, the layer whose block it runs: layer `i` uses "
        f"the weights of layer `tie_map[i]`. This model has {len(roots)} distinct blocks "
        f"(roots {roots}) for {len(ties)} layers"
        + (f"; layers {tied} are tied to an earlier one." if tied else "; none is tied.")
    ]
    if result.diverged:
        lines += ["", "**Training diverged** (a non-finite loss): the episode ended early "
                      "and these weights are not usable."]
    for note in result.notes:
        lines += ["", f"Note: {note}."]
    lines += [
        "",
        "## The untied copy of a tied model",
        "",
        "This folder is the *untied* copy of the run's final model: every tied layer holds "
        f"its own copy of its root's weights, so it is a plain `{cls}` that any "
        f"{label} tooling loads, with all {_count(result.total_params)} parameters. "
        + (f"At the end of the run only {_count(result.trainable_params)} of them "
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
