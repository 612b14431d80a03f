"""`python -m agents.benchmark.leaderboard RESULTS.json ... --out docs/leaderboard.md`.

Builds the leaderboard page from benchmark results files (`results.json` of
`python -m agents.benchmark`, or their published copies in `docs/results/`) and nothing
else: every number on it is read from those files. One table per track (name and
version; results of different versions are different tables, and a file without a
track is a table of its own), one row per agent, sorted by final validation perplexity:
IQM [95% CI] of final val and test perplexity, trainable fraction and layers tied,
P(improves on the track's reference agent, `qlearning`) [CI], hypervolume [CI], seeds.
Under each table: which agents beat it, whether the paper's hypothesis holds
(`agents.benchmark.stats.verdicts`, with the track's `Hypothesis`), and
for each results file its commit, command and wall time. Then "Submit your agent".

Paths under the current folder or the repository are written relative; any other
absolute path left in what the page would show stops the generator (publish such a file
with `scripts/portable_results.py` first), so the page never carries machine paths.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.benchmark.paired_page import answers, paired_section, surrogate_lines
from agents.benchmark.report import ROOT, ci, code_version, fmt, track_of
from agents.benchmark.stats import (
    MIN_SEEDS_FOR_VERDICT,
    Bootstrap,
    hypervolume_box,
    hypervolume_estimates,
    improvement,
    verdicts,
)
from agents.benchmark.tracks import Hypothesis, judged_by
from agents.runs.protocol import eval_seed
from agents.runs.result import cell_result
from tying_env.files import write_text

Json = dict[str, Any]
# an absolute path of some machine: POSIX folders, a home (~user), a Windows drive
ABSOLUTE = re.compile(r"(?<![\w.:/-])(?:/(?:work|home|tmp|Users|root|mnt|var|opt|private|srv|"
                      r"data|scratch|media)/[^\s`'\"|)]*|[A-Za-z]:\\[^\s`'\"|)]*)")


class LeaderboardError(ValueError):
    """Results that cannot make a leaderboard (mixed tracks, machine paths, ...)."""


# ---------------------------------------------------------------- inputs
def relative(value: Any, bases: Sequence[str]) -> Any:
    """`value` with every string's occurrences of the absolute folders `bases` made
    relative (as `scripts/portable_results.py` does for one base)."""
    if isinstance(value, dict):
        return {k: relative(v, bases) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, bases) for v in value]
    if isinstance(value, str):
        for base in bases:
            value = value.replace(base + "/", "").replace(base, ".")
        return value
    return value


def absolute_paths(text: str) -> list[str]:
    """The absolute machine paths in `text` (e.g. `/home/me/runs`, `C:\\runs`)."""
    return sorted(set(ABSOLUTE.findall(text)))


def _bases() -> list[str]:
    found = [str(Path.cwd().resolve()), str(ROOT)]
    return sorted(set(found), key=len, reverse=True)  # the longest (innermost) first


def display_path(path: Path) -> str:
    """`path` as the page shows it: relative to the current folder or the repository."""
    resolved = path.resolve()
    for base in (Path.cwd().resolve(), ROOT):
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
    if path.is_absolute():
        raise LeaderboardError(f"{path} is outside this folder and the repository: copy it "
                               "into the repository (scripts/portable_results.py) first")
    return path.as_posix()


def load(path: Path) -> Json:
    """One results file, its paths under this folder or the repository made relative."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LeaderboardError(f"{path}: not a readable results file ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("agents"), dict):
        raise LeaderboardError(f"{path}: no per-agent results (is it a benchmark's "
                               "results.json?)")
    meta = relative(meta, _bases())
    meta["_file"] = display_path(path)
    return meta


def is_noise_file(path: Path) -> bool:
    """Whether `path` holds a track's reward noise (`agents.benchmark.noise --json`), which
    the page shows in that track's section, rather than a benchmark's results."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False  # `load` says what is wrong with it
    return isinstance(data, dict) and "train_noise_std" in data and "track" in data


def track_key(meta: Json) -> tuple[str, str]:
    """(name, version) of a results file's track; an untracked file is its own group."""
    track = track_of(meta)
    if track.get("name"):
        return str(track["name"]), str(track.get("version", "?"))
    return "", meta["_file"]


def group(files: Sequence[Json]) -> dict[tuple[str, str], list[Json]]:
    """Results files by track, in the order given; an agent twice in a track is refused."""
    groups: dict[tuple[str, str], list[Json]] = {}
    # v2 first, then v1 (history), then the surrogate tracks, apart from every real one
    for meta in sorted(files, key=lambda m: (bool(track_of(m).get("surrogate_of")),
                                             not track_of(m).get("objective"))):
        groups.setdefault(track_key(meta), []).append(meta)
    for key, members in groups.items():
        seen: dict[str, str] = {}
        for meta in members:
            for agent in meta["agents"]:
                if agent in seen:
                    raise LeaderboardError(
                        f"agent {agent!r} of track {key[0]} v{key[1]} is in both "
                        f"{seen[agent]} and {meta['_file']}: give one results file per agent")
                seen[agent] = meta["_file"]
    return groups


# ---------------------------------------------------------------- the page
def _sort_key(item: tuple[str, Json]) -> tuple[float, str]:
    value = ((item[1].get("iqm") or {}).get("final_val_ppl") or {}).get("value")
    return (float("inf") if value is None else value, item[0])


def _seeds(row: Json) -> str:
    text = str(len(row.get("seeds") or []))
    failed = len(row.get("failed_seeds") or []) + len(row.get("missing_seeds") or [])
    return text + (f" ({failed} failed or missing)" if failed else "")


def columns(reference: str) -> tuple[str, ...]:
    """The table's columns, for a track whose agents are compared with `reference`."""
    return ("agent", "val ppl", "test ppl", "trainable (end)", "layers tied (end)",
            f"P(improves on {reference})", "hypervolume", "seeds")


def table(rows: dict[str, Json], across: Sequence[str] = (), *, reference: str) -> list[str]:
    """The Markdown table of one track's agents (`across`: comparisons marked `*`),
    compared with `reference`."""
    names = columns(reference)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for agent, row in sorted(rows.items(), key=_sort_key):
        iqm = row.get("iqm") or {}
        lines.append(" | ".join([
            f"| `{agent}`", ci(iqm.get("final_val_ppl")), ci(iqm.get("final_test_ppl")),
            ci(iqm.get("trainable_fraction"), 3), ci(iqm.get("layers_tied_fraction"), 3),
            ci(row.get("improvement")) + (" \\*" if agent in across else ""),
            ci(row.get("hypervolume"), 4), _seeds(row)]) + " |")
    return lines


def _finished_values(meta: Json, agent: str) -> list[Any]:
    results = [cell_result(c) for c in meta.get("cells") or []
               if c.get("agent") == agent and c.get("status") == "finished"]
    return [r.final_val_ppl if r is not None else None for r in results]


def merged_rows(members: Sequence[Json],
                reference: str) -> tuple[dict[str, Json], list[str]]:
    """The agents of a track's results files, and those whose comparison with `reference`
    is computed here because `reference` is in another file (with `stats.improvement`
    and the bootstrap settings of the agent's file: what one report would give)."""
    rows: dict[str, Json] = {}
    across = []
    home = next((m for m in members if reference in m["agents"]), None)
    baseline = _finished_values(home, reference) if home else []
    box = track_box(members)
    for meta in members:
        method = (meta.get("statistics") or {}).get("method") or {}
        settings = Bootstrap(**{k: method[k] for k in ("reps", "confidence", "seed")
                                if k in method})
        volumes = hypervolume_estimates(meta.get("cells") or [], list(meta["agents"]), box,
                                        settings)
        for agent, row in meta["agents"].items():
            row = row | {"hypervolume": volumes[agent]}
            if meta is not home and baseline and agent != reference \
                    and row.get("improvement") is None:
                row = row | {"improvement": improvement(
                    _finished_values(meta, agent), baseline,
                    f"improvement/{agent}/{reference}", settings)}
                across.append(agent)
            rows[agent] = row
    return rows, across


def track_box(members: Sequence[Json]) -> Json | None:
    """The hypervolume box of a track: one for all its results files, from all their
    cells (`stats.hypervolume_box`; a track's fixed `hypervolume_reference` wins)."""
    cells = [c for meta in members for c in meta.get("cells") or []]
    return hypervolume_box(cells, track_of(members[0]).get("hypervolume_reference"))


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "unknown"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else \
        f"{seconds / 60:.1f} min"


def source_lines(meta: Json, page_dir: str = "docs") -> list[str]:
    """Where a results file's numbers come from: file, commit, command, wall time
    (`page_dir`: the folder of the page, which its links are relative to)."""
    code = meta.get("code") or {}
    run = meta.get("run") or {}
    request = meta.get("request") or {}
    results = [cell_result(c) for c in meta.get("cells") or []]
    cells = sum(float(r.total_seconds or 0) for r in results if r is not None)
    commit = code.get("commit")
    lines = [f"- {_link(meta['_file'], page_dir)}: commit "
             + (f"`{commit[:12]}`" + (" (with uncommitted changes)" if code.get("dirty")
                                      else "") if commit else "not recorded")
             + f", {meta.get('date', 'date unknown')}, "
             f"{(meta.get('machine') or {}).get('cpu_count', '?')} CPUs"]
    if request.get("command"):
        lines.append(f"    - command: `{request['command']}`")
    counts = meta.get("counts") or {}
    total = len(meta.get("cells") or [])
    if counts and counts.get("finished", total) < total:
        lines.append(f"    - **incomplete**: {counts.get('finished', 0)} of {total} cells "
                     f"finished; the rows use the finished ones (run the command again to "
                     f"go on)")
    lines.append(f"    - wall time: {_duration(run.get('seconds'))} for the last invocation "
                 f"({len(run.get('ran') or [])} cells run, {len(run.get('skipped') or [])} "
                 f"skipped, {request.get('workers', '?')} worker(s)); the cells' own times add "
                 f"up to {_duration(cells)}")
    return lines


def _link(file: str, page_dir: str = "docs") -> str:
    """A file as the page names it: a link (relative to the page's folder `page_dir`) when
    both are in the docs (docs/)."""
    if file.startswith("docs/") and (page_dir + "/").startswith("docs/"):
        return f"[`{file}`]({posixpath.relpath(file, page_dir)})"
    return f"`{file}`"


def setting_lines(members: Sequence[Json]) -> list[str]:
    """The track's fixed settings, as its results file recorded them."""
    track = (members[0].get("request") or {}).get("track") or {}
    if not track:
        return []
    kwargs = ", ".join(f"`{k}={v}`" for k, v in sorted(track.get("env_kwargs", {}).items()))
    seeds = ", ".join(map(str, track.get("seeds", [])))
    if track.get("train_episodes"):  # train-then-test: a cell's seed trains, tests differ
        last = int(track.get("eval_episodes") or 1) - 1
        tests = "; ".join(f"{eval_seed(s, 0)}-{eval_seed(s, last)}" for s in track["seeds"])
        seeds = f"{seeds} (training runs; test seeds {tests})"
    description = str(track.get("description", ""))
    return [f"{description[:1].upper()}{description[1:]}. Settings: {kwargs}; seeds {seeds}; final "
            "metrics on "
            f"{track.get('eval_split', 'the validation and test splits')}.", ""]


def noise_lines(result: Json | None) -> list[str]:
    """The track's reward noise (`agents.benchmark.noise`), if measured."""
    if not result:
        return []
    own = str(result.get("track_eval_batches"))
    sizes = ", ".join(f"{fmt(v, 4)} with {n} batch(es)" + (" (the track's)" if n == own else "")
                      for n, v in result.get("eval_noise_std", {}).items())
    return [f"Reward noise (`{result.get('command', 'python -m agents.benchmark.noise')}`, "
            f"{result.get('points')} decision points, rewards in validation log-perplexity): "
            f"one decision changes the reward by {fmt(result.get('decision_effect_median'), 4)} "
            f"(median |r(change) - r(no change)|); the no-change reward varies by "
            f"{fmt(result.get('train_noise_std'), 4)} (std) over training-data orders, and an "
            f"evaluation subset adds {sizes}." + _snr(result), ""]


def _snr(result: Json) -> str:
    """The measurement's design and signal-to-noise ratio, where it recorded them."""
    if "snr" not in result:
        return ""
    size = result.get("recommended_eval_batches")
    return (f" Measured on seeds {', '.join(map(str, result.get('seeds', [])))} at "
            f"{', '.join(f'{float(f):.0%}' for f in result.get('phases', []))} of the episode, "
            f"with evaluation subsets spread over the split: one reward's signal-to-noise ratio "
            f"is {fmt(result['snr'])} at the track's size; the smallest size whose noise is at "
            f"most half the training noise is "
            f"{f'{size} batches' if size else 'none of those measured'}.")


def track_section(key: tuple[str, str], members: Sequence[Json],
                  noise: Json | None = None, page_dir: str = "docs",
                  real: Sequence[Json] = ()) -> list[str]:
    """One track: heading, settings, table, what the numbers say, noise, sources (`real`:
    for a surrogate track, the results files of the real track it emulates)."""
    name, version = key
    env = (members[0].get("request") or {}).get("env_id", "unknown env")
    title = f"Track `{name}` (version {version})" if name else f"`{members[0]['_file']}`"
    track = track_of(members[0])
    if track.get("objective"):  # Benchmark v2: paired statistics
        kind = (f"the surrogate of `{track['surrogate_of']}`" if track.get("surrogate_of")
                else "Benchmark v2")
        lines = [f"## {title}: {kind}", "", f"Environment `{env}`.", "",
                 *setting_lines(members)]
        if track.get("surrogate_of"):
            lines += surrogate_lines(members[0], real)
        for meta in members:
            lines += [*paired_section(meta), "", *answers(meta), ""]
        lines += [*noise_lines(noise), "Results files:", ""]
        for meta in members:
            lines += source_lines(meta, page_dir)
        return lines
    reference, hypothesis = judged_by(track_of(members[0]))
    rows, across = merged_rows(members, reference)
    has_baseline = any((m.get("statistics") or {}).get("baseline") for m in members)
    verdict = verdicts(rows, reference if has_baseline else None, hypothesis)
    lines = [f"## {title}", "", f"Environment `{env}`"
             + ("" if name else " (no track recorded: compare with care)") + ".", "",
             *setting_lines(members), *table(rows, across, reference=reference), ""]
    if across:
        lines += [f"\\*: P(improves on {reference}) computed here, from the seeds in the "
                  f"results files of this track (`{reference}` is in another file than "
                  f"{', '.join(f'`{a}`' for a in across)}), as the report computes it.", ""]
    lines += [*verdict_lines(verdict, rows, reference, hypothesis), "", *noise_lines(noise)]
    box = track_box(members)
    if box:
        lines.append(f"Hypervolume box: val ppl {fmt(box['ideal_val_ppl'])} to "
                     f"{fmt(box['final_val_ppl'])}, trainable fraction 0 to "
                     f"{fmt(box['trainable_fraction'])} ({box['source']}); computed here "
                     "for all the track's results files.")
    lines += ["", "Results files:", ""]
    for meta in members:
        lines += source_lines(meta, page_dir)
    return lines


def verdict_lines(verdict: Json, rows: dict[str, Json], reference: str,
                  hypothesis: Hypothesis) -> list[str]:
    """Who beats `reference`; whether `hypothesis` holds (from `stats.verdicts`)."""
    tied = hypothesis.min_tied_fraction
    if verdict["baseline"] is None:
        lines = [f"- **Beats `{reference}`:** not computed (no `{reference}` results here)."]
    else:
        beats = verdict["beat_baseline"]
        few = sorted(a for a, row in rows.items()
                     if (row.get("improvement") or {}).get("verdict") == "too few seeds")
        lines = [f"- **Beats `{reference}`** (P(improvement) interval entirely above 0.5): "
                 + (", ".join(f"`{a}`" for a in beats) if beats else "none")
                 + (f"; not judged, fewer than {MIN_SEEDS_FOR_VERDICT} finished seeds on a "
                    f"side: {', '.join(f'`{a}`' for a in few)}" if few else "") + "."]
    paper = verdict["paper"]
    if paper.get("holds") is None:
        lines.append(f"- **The paper's claim** (at least {tied:.0%} of layers tied, "
                     f"perplexity within conventional training's interval): cannot be checked "
                     f"here ({paper.get('note')}).")
        return lines
    meeting = paper["meeting"]
    lines.append(f"- **The paper's claim** (IQM layers tied at least {tied:.0%} and IQM "
                 f"val ppl at most the upper end of `{paper['conventional']}`'s interval, "
                 f"{ci(paper['conventional_val_ppl'])}): "
                 + (f"**holds**, for {', '.join(f'`{a}`' for a in meeting)}." if meeting
                    else "**does not hold** for any agent."))
    mine = paper["agents"].get(reference)
    if mine:
        lines.append(f"- `{reference}` (the paper's Q-learner): {mine['layers_tied']:.0%} "
                     f"of layers tied, val ppl {fmt(mine['val_ppl'])}: the claim "
                     + ("holds for it." if mine["holds"] else "does not hold for it."))
    return lines


SUBMIT = """## Submit your agent

Write your agent as a class with the interface of `agents.base.Agent` (see
[Agents](agents.md)): `__init__(self, env, seed=0, **hparams)`, `run()` for the online
protocol, and for checkpoints `get_state`/`set_state`. Then run a track with it beside
the published agents, naming the class as `package.module:ClassName`, without
registering it in this repository:

```bash
python -m agents.benchmark --track TRACK --agents qlearning,my_pkg.my_agents:MyAgent --out runs/mine
```

The module must be importable by the benchmark's worker processes (installed, or on
`PYTHONPATH`). Publish the results file without machine paths and regenerate this page:

```bash
python scripts/portable_results.py runs/mine/results.json \\
    docs/results/leaderboard/mine.json --base .
python -m agents.benchmark.leaderboard docs/results/leaderboard/*.json --out docs/leaderboard.md
```

`docs/results/leaderboard/` holds this page's inputs and nothing else: the tracks' results
files and their reward-noise files (told apart by their content).

Then open a pull request with both files. The page is generated; do not edit its numbers.

Every cell records a fingerprint of its agent's code (`agent_source`: the SHA-256 of the
modules that define the agent class), and nothing in a results file is taken on trust: a
reviewer re-runs a sample of its cells and compares them with what the file says,
bitwise on the same platform and threads per worker, within a stated tolerance elsewhere:

```bash
python -m agents.benchmark.validate docs/results/leaderboard/mine.json --sample 2
```
"""


# MkDocs front matter: the page hides the table of contents (Material theme), so that the
# tables have the width of the screen (docs/css/tables.css makes them fit 1366 px)
WIDE_PAGE = ["---", "hide:", "  - toc", "---", ""]


def render(files: Sequence[Json], command: str, commit: Json,
           noise: dict[str, Json] | None = None, title: str = "Leaderboard",
           submit: bool = True, page_dir: str = "docs") -> str:
    """The leaderboard page from loaded results files (and reward-noise files by track);
    `title` heads it, `submit` adds the section "Submit your agent", `page_dir` is the
    page's folder (links are relative to it)."""
    groups = group(files)
    references = {judged_by(track_of(members[0]))[0] for members in groups.values()}
    reference = " / ".join(sorted(references)) or judged_by(None)[0]
    head = commit.get("commit")
    lines = [*WIDE_PAGE, f"# {title}", "",
             f"Generated from benchmark results files by `{command}`"
             + (f" at commit `{head[:12]}`" + (" (with uncommitted changes)"
                                               if commit.get("dirty") else "")
                if head else "") + "; do not edit it by hand.", "",
             "Every number is an interquartile mean (IQM, the mean of the middle 50%) over "
             "seeds with its 95% stratified-bootstrap interval in brackets (rliable), except "
             f"P(improves on {reference}): the probability that a seed of the agent ends with a "
             f"lower final validation perplexity than a seed of `{reference}` (ties count "
             "half). The hypervolume is also an IQM over seeds: per seed, the share of the "
             "track's box (its best to worst final val ppl, trainable fraction 0 to 1) that "
             "the seed's (val ppl, trainable fraction) result dominates (pymoo; both "
             f"lower-better). An agent *beats* `{reference}` when its P(improvement) "
             "interval lies entirely above 0.5. `(n=1)`: one seed, no interval. Rows are sorted by "
             "validation perplexity.", ""]
    for key, members in groups.items():
        label = f"{key[0]}/v{key[1]}" if key[0] else ""
        of = track_of(members[0]).get("surrogate_of")
        real = [m for (name, _), ms in groups.items() if of and name == of for m in ms]
        lines += [*track_section(key, members, (noise or {}).get(label), page_dir, real), ""]
    if submit:
        lines.append(SUBMIT)
    text = "\n".join(lines).rstrip("\n") + "\n"
    found = absolute_paths(text)
    if found:
        raise LeaderboardError("the page would show absolute paths of a machine: "
                               + ", ".join(found) + "; publish the results files with "
                               "scripts/portable_results.py (--base: the folder the benchmark "
                               "ran in) and generate from those")
    return text


def build(paths: Sequence[str | Path], out: str | Path,
          noise_paths: Sequence[str | Path] = (), title: str | None = None) -> str:
    """Write the leaderboard of `paths` (and the noise files `noise_paths`) to `out`; with
    `title`, a page of that title without the section "Submit your agent"."""
    noise_paths = [*noise_paths, *(p for p in paths if is_noise_file(Path(p)))]
    paths = [p for p in paths if p not in noise_paths]
    files = [load(Path(p)) for p in paths]
    noise = {}
    for path in noise_paths:
        result = json.loads(Path(path).read_text())
        noise[result["track"]] = result
    command = shlex.join(["python", "-m", "agents.benchmark.leaderboard",
                          *(display_path(Path(p)) for p in paths),
                          *(["--noise", *(display_path(Path(p)) for p in noise_paths)]
                            if noise_paths else []),
                          "--out", display_path(Path(out)),
                          *(["--title", title] if title else [])])
    text = render(files, command, code_version(), noise, title or "Leaderboard",
                  submit=title is None, page_dir=display_path(Path(out).parent))
    write_text(Path(out), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.benchmark.leaderboard",
                                     description="Build the leaderboard page from benchmark "
                                                 "results files (one table per track).")
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json",
                        help="results.json of benchmarks (or their copies in docs/results/), "
                             "and reward-noise files, which are recognised as such")
    parser.add_argument("--noise", nargs="*", type=Path, default=[], metavar="NOISE.json",
                        help="reward-noise files of the tracks (python -m "
                             "agents.benchmark.noise --json), shown in their sections")
    parser.add_argument("--out", type=Path, default=Path("docs/leaderboard.md"),
                        help="the page to write (default docs/leaderboard.md)")
    parser.add_argument("--title", metavar="TEXT",
                        help="another page of the same tables under this title, without the "
                             "section \"Submit your agent\" (e.g. a comparison that is not "
                             "a leaderboard)")
    args = parser.parse_args(argv)
    try:
        build(args.results, args.out, args.noise, args.title)
    except LeaderboardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(args.results)} results file(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
