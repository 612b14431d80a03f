"""`python -m tying_env.finetune`: fine-tune a saved model on a GLUE task.

    python -m tying_env.finetune --model runs/X/model --task sst2 --data-dir GLUE \\
        --out runs/X/glue-sst2

The options are `tying_env.finetune.run.FinetuneSettings`'s fields. Exit status: 0 on
success; 2 for a bad option (its message names it, as argparse does); 1 when the data
cannot be had here (a task not in the local `datasets` cache) or a file cannot be
written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tying_env.errors import DataUnavailableError, SettingError, WriteFailedError
from tying_env.finetune.glue import TASKS

PROG = "python -m tying_env.finetune"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Fine-tune a saved model (a run's "
                                "model/ or compact/ folder, or a Hugging Face checkpoint "
                                "folder) on a GLUE task; writes OUT/finetune.json and "
                                "OUT/predictions.tsv.")
    p.add_argument("--model", required=True, help="the model folder")
    p.add_argument("--task", required=True, help=f"the GLUE task: {', '.join(TASKS)}")
    p.add_argument("--out", required=True, help="the folder to write the result into")
    p.add_argument("--data-dir", help="a folder in GLUE's layout (TASK/train.tsv, "
                                      "TASK/dev.tsv) or one task's folder; without it, the "
                                      "task is read from the local `datasets` cache")
    p.add_argument("--tokenizer", help="a tokenizer folder or cached name, or 'ids' (texts "
                                       "written as token ids); default: the model folder's, "
                                       "or for compact/ the run's model/")
    p.add_argument("--ties", choices=("keep", "untie"),
                   help="keep the compact folder's tie map while fine-tuning (its default), "
                        "or give every position its own weights (an HF folder's only choice)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.1,
                   help="fraction of the steps with a linear warmup (then linear decay)")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--max-length", type=int, help="tokens per example (default: the model's "
                                                  "context)")
    p.add_argument("--max-train", type=int, help="use the first N training examples")
    p.add_argument("--max-eval", type=int, help="use the first N dev examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a result already in --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from tying_env.finetune.run import FinetuneSettings, finetune

    settings = FinetuneSettings(**{k: v for k, v in vars(args).items()})
    try:
        result = finetune(settings)
    except SettingError as e:
        option = f"--{e.argument.replace('_', '-')}" if e.argument else "?"
        print(f"{PROG}: error: argument {option}: {e}", file=sys.stderr)
        return 2
    except (DataUnavailableError, WriteFailedError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    base = result["majority_baseline"]["metrics"][result["metric"]]
    print(f"{result['task']}: {scores} on {result['data']['eval_examples']} dev examples "
          f"(majority label: {result['metric']} {base:.4f}); trainable parameters "
          f"{result['model']['trainable_params']:,} of {result['model']['untied_params']:,} "
          f"(ties {result['model']['ties']}) -> {settings.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
