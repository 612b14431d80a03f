"""The published tie mechanics collapse onto one storage; ours do not (issue 26).

Replays the same decisions under the published `apply_action` (a copy aliases the
source's current storage, "independent" only sets `requires_grad`) and under this
project's semantics (`tying_env.published_ties`), and records per sweep, for both, the
distinct storages (blocks of weights that exist) and the positions counted "trainable".
The mechanics depend only on the actions, so no model is trained. Action sequences:

- `random`: every choice uniform over {copy 0..i-1, independent};
- `eps-independent`, `eps-previous`, `eps-first`: the paper's exploration (epsilon =
  max(0.01, 0.95^sweep), a uniform choice with probability epsilon) around a greedy
  policy: always independent, always tie to the previous layer, always tie to layer 0.

    python scripts/published_collapse.py                    # 12 and 48 layers, 100 sweeps, 5 seeds
    python scripts/published_collapse.py --from-json docs/results/published_collapse.json

Writes the JSON (per sweep: mean, min and max over seeds), the figure and the page
(`docs/results/published_collapse.{json,png,md}` by default); `--from-json` redraws the
figure and the page from a JSON alone. A minute on one core.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/published_collapse.py` from anywhere
    sys.path.insert(0, str(ROOT))

from agents.benchmark.report import code_version  # noqa: E402
from tying_env.files import atomic_write, read_json, write_json  # noqa: E402
from tying_env.published_ties import STARTS, OurTies, PublishedTies  # noqa: E402

Json = dict[str, Any]
FORMAT, VERSION = "published-collapse", 1
OUT = ROOT / "docs" / "results"
EPSILON = {"start": 1.0, "decay": 0.95, "floor": 0.01}  # the published exploration
GREEDY: dict[str, Callable[[int], int] | None] = {  # layer i -> greedy choice; None: no greedy
    "random": None,
    "eps-independent": lambda i: i,
    "eps-previous": lambda i: i - 1,
    "eps-first": lambda i: 0,
}
POLICIES = tuple(GREEDY)
LABELS = {"random": "uniformly random", "eps-independent": "ε-greedy: always independent",
          "eps-previous": "ε-greedy: tie to the previous layer",
          "eps-first": "ε-greedy: tie to layer 0"}
METRICS = {  # key: (what it counts, mechanics, attribute)
    "published_storages": ("published: distinct storages", "published", "distinct_storages"),
    "published_trainable": ('published: "trainable" positions', "published",
                            "trainable_positions"),
    "published_trainable_storages": ("published: storages trained", "published",
                                     "trainable_storages"),
    "ours_storages": ("ours: roots, each its own storage", "ours", "distinct_storages"),
    "ours_trainable": ("ours: trainable roots", "ours", "trainable_positions"),
}


def epsilon(sweep: int) -> float:
    """The published epsilon in sweep `sweep` (0-based): 1.0, times 0.95 a sweep, floor 0.01."""
    return max(EPSILON["floor"], EPSILON["start"] * EPSILON["decay"] ** sweep)


def decisions(policy: str, n_layer: int, sweeps: int,
              rng: np.random.Generator) -> Iterator[tuple[int, int, int]]:
    """`(sweep, layer, choice)` for every decision: layers 1..L-1 in order, each sweep."""
    greedy = GREEDY[policy]
    for sweep in range(sweeps):
        eps = epsilon(sweep)
        for i in range(1, n_layer):
            explore = greedy is None or rng.random() < eps
            yield sweep, i, int(rng.integers(0, i + 1)) if explore else greedy(i)


def replay_seed(n_layer: int, policy: str, sweeps: int, seed: int,
                start: str = "frozen") -> dict[str, list[int]]:
    """Every metric of `METRICS` at reset (index 0) and after each sweep, both mechanics
    driven by the same decisions (drawn from `seed`)."""
    rng = np.random.default_rng([seed, n_layer, POLICIES.index(policy)])
    state = {"published": PublishedTies.start(n_layer, start),
             "ours": OurTies.start(n_layer, start)}
    series: dict[str, list[int]] = {key: [] for key in METRICS}

    def record() -> None:
        for key, (_, mechanics, attribute) in METRICS.items():
            series[key].append(int(getattr(state[mechanics], attribute)))

    record()
    last = 0
    for sweep, i, choice in decisions(policy, n_layer, sweeps, rng):
        if sweep != last:
            record()
            last = sweep
        state = {name: value.choose(i, choice) for name, value in state.items()}
    record()
    return series


def first_sweep_at_one(storages: Sequence[int]) -> int | None:
    """The first sweep after which a model runs on one storage (it cannot leave it)."""
    return next((k for k, n in enumerate(storages) if n == 1), None)


def collapse(layers: Sequence[int], policies: Sequence[str], sweeps: int,
             seeds: Sequence[int], start: str = "frozen") -> Json:
    """The study's data: per (layers, policy), each metric's mean/min/max over seeds per
    sweep, the final values and the sweep of collapse onto one storage per seed."""
    cells = []
    for n_layer in layers:
        for policy in policies:
            runs = [replay_seed(n_layer, policy, sweeps, s, start) for s in seeds]
            series, final = {}, {}
            for key in METRICS:
                values = np.array([run[key] for run in runs], dtype=float)
                series[key] = {"mean": [round(float(v), 3) for v in values.mean(axis=0)],
                               "min": [int(v) for v in values.min(axis=0)],
                               "max": [int(v) for v in values.max(axis=0)]}
                final[key] = {"mean": series[key]["mean"][-1], "min": series[key]["min"][-1],
                              "max": series[key]["max"][-1]}
            cells.append({
                "n_layer": n_layer, "policy": policy, "series": series, "final": final,
                "one_storage_sweep": [first_sweep_at_one(run["published_storages"])
                                      for run in runs],
                "trainable_is_roots": all(  # at every sweep's end, every seed
                    run["published_trainable"][1:] == run["ours_storages"][1:] for run in runs)})
    return {"format": FORMAT, "version": VERSION,
            "settings": {"layers": list(layers), "policies": list(policies),
                         "sweeps": sweeps, "seeds": list(seeds), "start": start,
                         "epsilon": dict(EPSILON)},
            "cells": cells}


# ------------------------------------------------------------------------- figure
LINES = (  # metric, colour, style, width; drawn in this order (the dashed line on top)
    ("ours_storages", "#7fb3e6", "-", 4.0),
    ("published_storages", "#c0392b", "-", 2.2),
    ("published_trainable", "#d35400", "--", 1.8),
)
LINEAR_UNTIL = 10  # sweeps on a linear x axis, then logarithmic: the collapse is early


def figure(data: Json, path: str | Path) -> Path:
    """One panel per (layers, policy): the lines of `LINES` per sweep, mean over seeds
    with the min-max band."""
    settings = data["settings"]
    layers, policies = settings["layers"], settings["policies"]
    cells = {(c["n_layer"], c["policy"]): c for c in data["cells"]}
    fig = Figure(figsize=(3.3 * len(policies) + 0.6, 2.9 * len(layers) + 1.0))
    axes = fig.subplots(len(layers), len(policies), squeeze=False, sharex=True)
    for row, n_layer in enumerate(layers):
        for col, policy in enumerate(policies):
            ax = axes[row][col]
            series = cells[(n_layer, policy)]["series"]
            x = np.arange(len(series["published_storages"]["mean"]))
            for key, colour, style, width in LINES:
                s = series[key]
                ax.fill_between(x, s["min"], s["max"], color=colour, alpha=0.13, lw=0)
                ax.plot(x, s["mean"], color=colour, ls=style, lw=width, label=METRICS[key][0])
            ax.set_ylim(0, n_layer * 1.05)
            ax.set_xscale("symlog", linthresh=LINEAR_UNTIL, linscale=1.2)
            ax.set_xlim(0, x[-1])
            ticks = [t for t in (0, 2, 4, 6, 8, 10, 20, 50, 100, 200, 500) if t <= x[-1]]
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.grid(alpha=0.3)
            ax.set_title(f"{n_layer} layers, {LABELS[policy]}", fontsize=10)
            if col == 0:
                ax.set_ylabel("blocks / positions")
            if row == len(layers) - 1:
                ax.set_xlabel("sweep")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(LINES), fontsize=10,
               frameon=False, bbox_to_anchor=(0.5, 0.995))
    fig.suptitle(f"Same decisions, two mechanics: mean over {len(settings['seeds'])} seeds "
                 f"(band: min to max); x linear to sweep {LINEAR_UNTIL}, then logarithmic",
                 y=0.945, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return path


# --------------------------------------------------------------------------- page
def fmt(value: float) -> str:
    return f"{value:.1f}"


def spread(final: Json) -> str:
    """`mean (min–max)`, or the value alone when every seed agrees."""
    if final["min"] == final["max"]:
        return fmt(final["mean"])
    return f"{fmt(final['mean'])} ({final['min']}–{final['max']})"


def collapse_cell(sweeps: Sequence[int | None]) -> str:
    """When the published model reached one storage: `mean (min–max)` over seeds."""
    reached = [s for s in sweeps if s is not None]
    if not reached:
        return "never"
    text = spread({"mean": sum(reached) / len(reached), "min": min(reached),
                   "max": max(reached)})
    return text + (f", not in {len(sweeps) - len(reached)} of {len(sweeps)}"
                   if len(reached) < len(sweeps) else "")


TABLE = ("published_storages", "published_trainable", "published_trainable_storages",
         "ours_storages", "ours_trainable")
HEADER = ("layers", "actions", "published: storages", 'published: "trainable" positions',
          "published: storages trained", "published: sweeps to one storage",
          "ours: roots", "ours: trainable roots")


def table_rows(data: Json) -> list[list[str]]:
    """The table's cells per (layers, policy), from the JSON's final values."""
    return [[str(c["n_layer"]), LABELS[c["policy"]],
             *[spread(c["final"][k]) for k in TABLE[:3]], collapse_cell(c["one_storage_sweep"]),
             *[spread(c["final"][k]) for k in TABLE[3:]]] for c in data["cells"]]


def amount(value: float, noun: str) -> str:
    """`1 storage`, `2.8 storages`, ... (means with one decimal, whole numbers without)."""
    return f"{number(value)} {noun}" + ("" if value == 1 else "s")


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else fmt(value)


def between(values: Sequence[float], noun: str) -> str:
    lo, hi = min(values), max(values)
    return amount(lo, noun) if lo == hi else f"{number(lo)} to {amount(hi, noun)}"


def finding(data: Json) -> str:
    """The key finding in one paragraph, computed from the data."""
    sweeps, parts = data["settings"]["sweeps"], []
    for n_layer in data["settings"]["layers"]:
        cells = [c for c in data["cells"] if c["n_layer"] == n_layer]
        said = []
        rand = next((c for c in cells if c["policy"] == "random"), None)
        if rand is not None:
            f, when = rand["final"], rand["one_storage_sweep"]
            after = (f" (one storage after {min(when)}–{max(when)} sweeps)"
                     if None not in when else "")
            said.append(
                f"under random actions the published model ends on "
                f"{amount(f['published_storages']['mean'], 'storage')} after {sweeps} sweeps"
                f"{after} while counting "
                f"{amount(f['published_trainable']['mean'], 'position')} \"trainable\"; ours "
                f"ends on {amount(f['ours_storages']['mean'], 'root')}, each its own block")
        eps = [c for c in cells if c["policy"] != "random"]
        if eps:
            latest = [s for c in eps for s in c["one_storage_sweep"]]
            by = f", every run by sweep {max(latest)}" if None not in latest else ""
            said.append(
                "under the paper's ε schedule, whatever the greedy policy, it ends on "
                + between([c["final"]["published_storages"]["mean"] for c in eps], "storage")
                + by + ", while counting "
                + between([c["final"]["published_trainable"]["mean"] for c in eps], "position")
                + " \"trainable\" (ours: "
                + between([c["final"]["ours_storages"]["mean"] for c in eps], "root") + ")")
        if said:
            parts.append(f"At {n_layer} layers, " + "; ".join(said) + ".")
    if data["cells"] and all(c.get("trainable_is_roots") for c in data["cells"]):
        parts.append(
            "At the end of every sweep of every run the published \"trainable\" count equals "
            "our number of roots: both count position 0 and the positions whose last choice "
            "was independent. The counts agree; the weights behind them do not: the published "
            "model trains its aliased storages through all those positions, ours a block "
            "for each.")
    return " ".join(parts)


def page(data: Json, figure_name: str = "published_collapse.png") -> str:
    """The generated page: header (command, commit), mechanics, finding, figure, table."""
    s, code = data["settings"], data.get("code") or {}
    head = code.get("commit")
    lines = [
        "# Published tie mechanics: the collapse", "",
        f"Generated from `published_collapse.json` by `{data.get('command', '?')}`"
        + (f" at commit `{head[:12]}`" + (" (with uncommitted changes)"
                                           if code.get("dirty") else "") if head else "")
        + "; do not edit it by hand.", "",
        "The published `DynamicGPT.apply_action` ties layer i to layer j by pointing i's "
        "parameters at j's *current* storage (`p_i.data = p_j.data`) and setting "
        "`requires_grad = False`; *independent* only sets `requires_grad = True`, so the "
        "layer stays on whatever storage it has. No operation gives a layer new storage: "
        "distinct blocks can only merge, and a layer made \"independent\" after a tie trains "
        "an alias of another layer's tensor. The published counts (`state[i] == i`, and "
        "\"# trainable params\" = `numel` summed over `requires_grad` parameters) count such "
        "an aliased block once per position. Our semantics (the default) give an untied "
        "layer a clone of the weights it ran, keep a re-tied root's dependents on its weights, "
        "and count every trainable block once.", "",
        f"Both mechanics replay the same decisions from the published start (`{s['start']}`: "
        "every block on its own random storage, only block 0 trainable), "
        f"{s['sweeps']} sweeps, seeds {', '.join(map(str, s['seeds']))}. ε = "
        f"max({EPSILON['floor']}, {EPSILON['decay']}^sweep), a uniform choice with "
        "probability ε, else the greedy policy. No model is trained: the mechanics depend "
        "only on the actions (`tests/test_published_mechanics.py` checks the replay against "
        "the published operations on real tensors).", "",
        f"**Finding.** {finding(data)}", "",
        f"![Distinct storages and \"trainable\" positions per sweep, both mechanics]"
        f"({figure_name})", "",
        "The dashed orange line lies on the wide blue one after the first sweep: the "
        "published \"trainable\" positions are our roots. The red line is what the "
        "published model really has.", "",
        "Final values after the last sweep: mean over seeds (min–max when seeds differ). "
        "*Storages trained*: distinct storages that some trainable position updates, the "
        "unique count of the published model.", "",
        "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER),
        *["| " + " | ".join(row) + " |" for row in table_rows(data)],
    ]
    return "\n".join(lines) + "\n"


def write_outputs(data: Json, json_path: Path | None, figure_path: Path,
                  page_path: Path) -> None:
    if json_path is not None:
        write_json(json_path, data)
    figure(data, figure_path)
    text = page(data, figure_path.name)
    atomic_write(page_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--start", choices=STARTS, default="frozen")
    parser.add_argument("--json", type=Path, default=OUT / "published_collapse.json")
    parser.add_argument("--figure", type=Path, default=OUT / "published_collapse.png")
    parser.add_argument("--page", type=Path, default=OUT / "published_collapse.md")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="redraw the figure and the page from this JSON")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        data = read_json(args.from_json)
        if data is None or data.get("format") != FORMAT:
            parser.error(f"{args.from_json} is not a {FORMAT} JSON file")
        write_outputs(data, None, args.figure, args.page)
        return 0
    if min(args.layers) < 2 or args.sweeps < 1 or args.seeds < 1:
        parser.error("--layers needs 2 or more, --sweeps and --seeds 1 or more")
    data = collapse(args.layers, args.policies, args.sweeps, range(args.seeds), args.start)
    data["command"] = shlex.join(["python", "scripts/published_collapse.py",
                                  *(argv if argv is not None else sys.argv[1:])])
    data["code"] = code_version()
    write_outputs(data, args.json, args.figure, args.page)
    print(f"wrote {args.json}, {args.figure}, {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
