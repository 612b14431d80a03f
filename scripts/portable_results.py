"""Write a benchmark's results.json for publishing: paths under BASE become relative.

A benchmark records the paths it ran with (its `--out`, a `data_dir`, the command),
absolute on the machine it ran on. A copy committed to the docs must not carry them:
this writes SRC to DEST with every string that starts with BASE (the folder the
benchmark ran in) rewritten relative to it; nothing else changes.

    python scripts/portable_results.py runs/bench/results.json docs/results/NAME.json --base .
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tying_env.files import write_json


def portable(value: Any, base: str) -> Any:
    """`value` with every occurrence of the absolute folder `base` made relative (`.`)."""
    if isinstance(value, dict):
        return {k: portable(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, base) for v in value]
    if isinstance(value, str):
        return value.replace(base + "/", "").replace(base, ".")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a benchmark's results.json")
    parser.add_argument("dest", type=Path, help="where to write the portable copy")
    parser.add_argument("--base", type=Path, default=Path("."),
                        help="the folder the benchmark ran in (default: here)")
    args = parser.parse_args(argv)
    base = str(args.base.resolve())
    write_json(args.dest, portable(json.loads(args.src.read_text(encoding="utf-8")), base))
    print(f"{args.src} -> {args.dest} (paths under {base} made relative)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
