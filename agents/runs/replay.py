"""Replaying a run: its tie-map video from `log.jsonl`, or its saved agent played again.

`python -m agents.runs.replay` has two commands:

- `video RUN_DIR [--out RUN_DIR/tie_map.mp4] [--fps 10]`: the frames that
  `render_mode="rgb_array"` draws (`tying_env.render`), one per decision plus the reset,
  rebuilt from the run's `log.jsonl` and `run.json` (nothing is trained, no model is
  built); an `.mp4`, or a `.gif` when `--out` ends in `.gif`. Works on a stopped run too.
- `play RUN_DIR [--seed S] [--video OUT.mp4]`: the run's agent (`agent/`) loaded into a
  fresh environment built from `run.json` (`agents.runs.factory`) plays one episode with
  its frozen policy (`Agent.policy`) on `--seed` (default: the run's own seed; for a
  train-then-evaluate run its first evaluation seed); prints the final tie map, the final
  full-split validation and test perplexities and the episode's return, and whether the
  tie maps are those the run logged for that seed (a deterministic agent on the CPU
  reproduces them); `--video` records it with Gymnasium's `RecordVideo`.

Neither command writes into `RUN_DIR` except where `--out`/`--video` point, nor overwrites
a file without `--overwrite`. Exit status: 0; 2 for bad input (not a run folder, an
output that exists, a bad setting); 1 when the run cannot be replayed here (moviepy is
missing: `pip install -e '.[video]'`; data that cannot be had; a file that cannot be
written).

The frame of the reset: `log.jsonl` holds one line per decision, not the reset. Its tie
map is the setting's starting one (`tying_env.memory.starting_state`); its validation
perplexity is `result.json`'s `initial_val_ppl` (or the checkpoint's record of the reset,
for a stopped run); its trainable fraction is computed from the logged parameter counts
(NaN in the rare case they do not determine it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.runs.result import RunResult, read_result
from agents.runs.spec import NOT_CONFIG, RUN_FILE
from tying_env.errors import DataUnavailableError, SettingError, WriteFailedError
from tying_env.files import UMASK, read_json

PROG = "python -m agents.runs.replay"
VIDEO_HINT = "pip install -e '.[video]'"
LOG_FILE = "log.jsonl"
AGENT_DIR = "agent"
DEFAULT_VIDEO = "tie_map.mp4"
VIDEO_SUFFIXES = (".mp4", ".gif")
Record = dict[str, Any]


class ReplayError(Exception):
    """A replay that cannot go on; the message says why, `status` is the exit status
    (2: bad input, 1: it cannot be done here)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ the run's files
def require_run(folder: Path, needed: Sequence[str]) -> None:
    """`ReplayError` (status 2) unless `folder` is a folder holding every name in `needed`."""
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise ReplayError(f"{folder} {what}; expected a run folder written by train-agent")
    missing = [name + ("/" if name == AGENT_DIR else "") for name in needed
               if not (folder / name).exists()]
    if missing:
        hint = ""
        if LOG_FILE in missing and list(folder.glob(f"eval/seed-*/{LOG_FILE}")):
            hint = (" (a train-then-evaluate run keeps its episodes' logs in eval/seed-*/; "
                    f"'{PROG} play {folder} --video OUT.mp4' records one)")
        raise ReplayError(f"{folder} is not a run folder: it has no {', no '.join(missing)}"
                          + hint)


def run_config(folder: Path) -> Any:
    """The resolved environment settings (`EnvConfig`) of the run in `folder`, from its
    `run.json` (the agent need not be importable)."""
    from tying_env.presets import make_config

    saved = read_json(folder / RUN_FILE)
    settings = saved.get("settings") if saved is not None else None
    env_kwargs = settings.get("env_kwargs") if isinstance(settings, dict) else None
    if not isinstance(env_kwargs, dict):
        raise ReplayError(f"{folder / RUN_FILE} is not a valid run file (no settings.env_kwargs)")
    try:
        return make_config(**{k: v for k, v in env_kwargs.items() if k not in NOT_CONFIG})
    except SettingError as e:
        raise ReplayError(f"{folder / RUN_FILE}: {e}") from None


def read_records(path: Path) -> list[Record]:
    """The decisions of a `log.jsonl`; `ReplayError` naming the file if one is not JSON."""
    from agents.runs.plots import read_log

    try:
        records = read_log(path)
    except (OSError, ValueError) as e:
        raise ReplayError(f"{path} cannot be read: {e}") from None
    if any(not isinstance(r, dict) or "tie_map" not in r for r in records):
        raise ReplayError(f"{path} is not a run log (a line without tie_map)")
    return records


def reset_record(cfg: Any, records: Sequence[Record], result: RunResult | None,
                 folder: Path) -> Record:
    """What the environment reported at reset: from the checkpoint (a stopped run keeps it
    there), else rebuilt from the settings, `result.json` and the logged counts."""
    from tying_env import checkpoint as ckpt
    from tying_env import memory

    saved = ckpt.find_checkpoint(folder)
    state = read_json(saved / "state.json") if saved is not None else None
    start = state.get("start") if state is not None else None
    if isinstance(start, dict) and "tie_map" in start:
        return start
    if not records:
        raise ReplayError(f"{folder / LOG_FILE} holds no decision yet: there is nothing to show")
    ties, frozen = memory.starting_state(cfg)
    first = records[0]
    return {"decision": 0, "tie_map": list(ties), "diverged": False,
            "val_ppl": result.initial_val_ppl if result is not None else None,
            "optimal_ppl": first.get("optimal_ppl"),
            "trainable_fraction": _reset_fraction(cfg, records, len(set(ties)), len(frozen))}


def _reset_fraction(cfg: Any, records: Sequence[Record], roots: int, frozen: int) -> float:
    """trainable / total at reset: `total - (L - roots + frozen) * block` over `total`."""
    from tying_env import memory

    total, L = int(records[0]["total_params"]), cfg.n_layer
    idle = L - roots + frozen  # blocks not trained at reset
    if idle == 0:
        return 1.0
    block: int | None = None
    if memory.by_formula(cfg):  # GPT-2 of the formula's shape
        block = memory.block_numel(cfg.n_embd)
    elif frozen == 0:  # no block is ever frozen: a record with fewer roots tells the block
        for r in records:
            n = len(set(r["tie_map"]))
            if n < L:
                block = (total - int(r["trainable_params"])) // (L - n)
                break
    return float("nan") if block is None else (total - idle * block) / total


# ------------------------------------------------------------------ the frames
def episode_views(cfg: Any, records: Sequence[Record], start: Record) -> list[Any]:
    """One `tying_env.render.EpisodeView` per frame: the reset, then each decision, as the
    environment's `render()` shows them."""
    from tying_env.render import EpisodeView

    vector = cfg.action_mode == "vector"
    per_sweep = 1 if vector else cfg.n_layer - 1
    budget = cfg.max_sweeps * per_sweep
    if len(records) > budget:
        raise ReplayError(f"the log holds {len(records)} decisions, more than the {budget} "
                          "of the run's settings")
    grid = np.full((cfg.n_layer, budget + 1), -1, dtype=np.int64)
    views = []
    for i, point in enumerate([start, *records]):
        decision = int(point.get("decision", i))
        ties = tuple(int(t) for t in point["tie_map"])
        if len(ties) != cfg.n_layer or not 0 <= decision <= budget:
            raise ReplayError(f"decision {decision} of the log does not fit the run's settings "
                              f"(tie map {list(ties)}, {budget} decisions)")
        grid[:, decision] = ties
        maps = grid.copy()
        maps[:, decision + 1:] = -1  # what the environment's TieLog holds at that point
        val_ppl = point.get("val_ppl")
        optimal = point.get("optimal_ppl")
        views.append(EpisodeView(
            maps=maps, ties=ties, decision=decision, budget=budget,
            sweep=decision if vector else decision // per_sweep, max_sweeps=cfg.max_sweeps,
            layer=1 if vector else 1 + decision % per_sweep, vector=vector,
            val_ppl=float("nan") if val_ppl is None else float(val_ppl),
            optimal_ppl=None if optimal is None else float(optimal),
            trainable_fraction=_float(point.get("trainable_fraction")),
            last_reward=None if i == 0 else float(point["reward"]),
            diverged=bool(point.get("diverged", False)), decisions_per_sweep=per_sweep))
    return views


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def frames(views: Sequence[Any]) -> Callable[[int], np.ndarray]:
    """`frame(i)`: the RGB frame of `views[i]`, drawn on one shared `Canvas`."""
    from tying_env.render import Canvas

    first = views[0]
    canvas = Canvas(first.n_layer, first.budget, first.decisions_per_sweep)
    last: list[Any] = [None, None]

    def frame(i: int) -> np.ndarray:
        if last[0] != i:
            last[:] = [i, canvas.draw(views[i])]
        return last[1]

    return frame


def _video_clip() -> Any:
    """moviepy's `VideoClip` (moviepy 2 or 1); `ReplayError` (status 1) when it is missing."""
    try:
        from moviepy import VideoClip  # moviepy >= 2
    except ImportError:
        try:
            from moviepy.editor import VideoClip  # moviepy 1
        except ImportError:
            raise ReplayError(f"writing a video needs moviepy, which is not installed: "
                              f"{VIDEO_HINT}", status=1) from None
    return VideoClip


def write_video(views: Sequence[Any], out: Path, fps: int = 10) -> Path:
    """Write the frames of `views` to `out` (`.mp4`, H.264; or `.gif`), one per view, via
    a temporary file beside it; returns `out`."""
    clip_class = _video_clip()
    frame = frames(views)
    n = len(views)
    # half a frame more: moviepy writes int(duration * fps) frames, which rounding can cut
    clip = clip_class(lambda t: frame(min(n - 1, max(0, round(t * fps)))),
                      duration=(n + 0.5) / fps)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=out.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        if out.suffix.lower() == ".gif":
            clip.write_gif(str(tmp), fps=fps, logger=None)
        else:
            clip.write_videofile(str(tmp), fps=fps, codec="libx264", audio=False, logger=None)
        os.chmod(tmp, 0o666 & ~UMASK)  # as open() would make it, not mkstemp's 0600
        os.replace(tmp, out)
    except OSError as e:
        raise WriteFailedError(str(out), f"cannot write {out}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return out


def video(folder: Path, out: Path | None = None, *, fps: int = 10,
          overwrite: bool = False) -> Path:
    """The tie-map video of the run in `folder` from its log (see the module docstring)."""
    require_run(folder, (RUN_FILE, LOG_FILE))
    out = folder / DEFAULT_VIDEO if out is None else out
    _check_output(out, overwrite, VIDEO_SUFFIXES, "--out")
    _video_clip()  # fail before reading anything
    cfg = run_config(folder)
    records = read_records(folder / LOG_FILE)
    start = reset_record(cfg, records, read_result(folder), folder)
    return write_video(episode_views(cfg, records, start), out, fps)


def _check_output(out: Path, overwrite: bool, suffixes: Sequence[str], option: str) -> None:
    if out.suffix.lower() not in suffixes:
        raise ReplayError(f"{option} {out}: the name must end in {' or '.join(suffixes)}")
    if out.exists() and not (overwrite and out.is_file()):
        raise ReplayError(f"{out} exists; pass --overwrite to replace it" if out.is_file()
                          else f"{out} exists and is not a file")


# ------------------------------------------------------------------ playing the agent
@dataclass(frozen=True)
class Replay:
    """One episode of a run's frozen agent (`play`)."""

    seed: int
    tie_maps: list[list[int]]  # after each decision
    episode_return: float
    final_val_ppl: float
    final_test_ppl: float
    same_as_run: bool | None  # the run's logged tie maps for this seed; None: none logged
    reference: Path | None  # the log compared with
    video: Path | None
    learns: bool = False  # the agent learns (`Agent.learns`): online, it explored too


def play(folder: Path, *, seed: int | None = None, video_out: Path | None = None,
         fps: int = 10, overwrite: bool = False,
         cache_dir: Path | None = None) -> Replay:
    """Play one episode of the run's saved agent, frozen (see the module docstring)."""
    import gymnasium as gym

    from agents.runs.factory import make_agent, make_env
    from agents.runs.protocol import eval_seed

    require_run(folder, (RUN_FILE, AGENT_DIR))
    if video_out is not None:
        _check_output(video_out, overwrite, (".mp4",), "--video")
        _video_clip()
    spec = run_spec(folder, cache_dir)
    if seed is None:
        seed = eval_seed(spec.seed, 0) if spec.train_episodes else spec.seed
    reference = (folder / LOG_FILE if not spec.train_episodes and seed == spec.seed
                 else folder / "eval" / f"seed-{seed}" / LOG_FILE)
    if video_out is not None:
        spec = replace(spec, env_kwargs={**spec.env_kwargs, "render_mode": "rgb_array"})
    env = make_env(spec)
    staging = None
    try:
        if video_out is not None:
            video_out.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=video_out.parent, prefix=".replay-"))
            env = gym.wrappers.RecordVideo(env, str(staging / "videos"), fps=fps,
                                           episode_trigger=lambda episode: episode == 0,
                                           name_prefix="replay", disable_logger=True)
        agent = make_agent(spec, env)
        try:
            agent.load(folder / AGENT_DIR)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReplayError(f"{folder / AGENT_DIR} cannot be loaded into agent "
                              f"{spec.agent!r}: {e}") from None
        tie_maps, episode_return, valid, test = _episode(env, agent, seed)
        env.close()  # RecordVideo has written the episode's video by now
        if staging is not None and video_out is not None:
            written = sorted((staging / "videos").glob("*.mp4"))
            if len(written) != 1:
                raise ReplayError(f"RecordVideo wrote {len(written)} videos, not one", status=1)
            os.replace(written[0], video_out)
    finally:
        env.close()  # again, harmless: on every way out
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    logged = read_records(reference) if reference.is_file() else None
    same = None if logged is None else [list(r["tie_map"]) for r in logged] == tie_maps
    return Replay(seed=seed, tie_maps=tie_maps, episode_return=episode_return,
                  final_val_ppl=valid.perplexity, final_test_ppl=test.perplexity,
                  same_as_run=same, reference=reference if logged is not None else None,
                  video=video_out, learns=type(agent).learns)


def run_spec(folder: Path, cache_dir: Path | None = None) -> Any:
    """The run's `RunSpec` from its `run.json` (`RunSpec.from_folder`, not for resuming)."""
    from agents.runs.spec import RunSpec

    return RunSpec.from_folder(folder, cache_dir=cache_dir, progress=False, resume=False)


def _episode(env: Any, agent: Any, seed: int) -> tuple[list[list[int]], float, Any, Any]:
    """The frozen agent's episode on `seed`: tie maps, return, full-split evaluations."""
    from agents.runs.protocol import frozen_episode

    episode_return, infos = frozen_episode(env, agent, seed)
    tie_maps = [[int(t) for t in info["tie_map"]] for info in infos[1:]]
    base = env.unwrapped
    return tie_maps, episode_return, base.evaluate("valid"), base.evaluate("test")


def report(replay: Replay, folder: Path, result: RunResult | None) -> str:
    """The lines `play` prints."""
    final = replay.tie_maps[-1] if replay.tie_maps else None
    lines = [f"replayed {folder / AGENT_DIR} on seed {replay.seed}: {len(replay.tie_maps)} "
             f"decisions, episode return {replay.episode_return:+.4f}",
             f"final tie map {final}",
             f"final val ppl {replay.final_val_ppl:.3f}, test ppl {replay.final_test_ppl:.3f} "
             "(full splits)"]
    if replay.same_as_run is None:
        lines.append(f"same tie maps as the run: not compared (the run logged no episode on "
                     f"seed {replay.seed})")
    else:
        why = ("; online, the run's agent learned and explored as it played: its frozen "
               "policy need not repeat that" if not replay.same_as_run and replay.learns
               and replay.reference == folder / LOG_FILE else "")
        lines.append(f"same tie maps as the run: {'yes' if replay.same_as_run else 'no'} "
                     f"({replay.reference}{why})")
        own = _run_own(result, replay, folder)
        if own is not None:
            lines.append(f"the run's own: val ppl {_float(own[0]):.3f}, test ppl "
                         f"{_float(own[1]):.3f}")
    if replay.video is not None:
        lines.append(f"video: {replay.video}")
    return "\n".join(lines)


def _run_own(result: RunResult | None, replay: Replay,
             folder: Path) -> tuple[Any, Any] | None:
    """The run's final (validation, test) perplexities of the episode replayed, if any."""
    if result is None:
        return None
    if replay.reference == folder / LOG_FILE and result.final_val_ppl is not None:
        return result.final_val_ppl, result.final_test_ppl
    for episode in result.eval or []:
        if episode.get("seed") == replay.seed:
            return episode.get("final_val_ppl"), episode.get("final_test_ppl")
    return None


# ------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    v = commands.add_parser("video", help="the tie-map video of a run, from its log.jsonl")
    v.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    v.add_argument("--out", type=Path, default=None,
                   help=f"the video: .mp4 or .gif (default RUN_DIR/{DEFAULT_VIDEO})")
    p = commands.add_parser("play", help="play the run's saved agent, frozen, for one episode")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--seed", type=int, default=None,
                   help="the episode's seed (default: the run's own)")
    p.add_argument("--video", type=Path, default=None, metavar="OUT.mp4",
                   help="record the episode (RecordVideo)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the data cache (default: the run's)")
    for sub in (v, p):
        sub.add_argument("--fps", type=int, default=10, help="frames per second (10)")
        sub.add_argument("--overwrite", action="store_true",
                         help="replace the output file if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m agents.runs.replay`; returns the exit status."""
    args = build_parser().parse_args(argv)
    folder = Path(args.run_dir)
    try:
        if args.fps <= 0:
            raise ReplayError(f"--fps {args.fps}: expected a number > 0")
        if args.command == "video":
            print(f"video: {video(folder, args.out, fps=args.fps, overwrite=args.overwrite)}")
        else:
            replay = play(folder, seed=args.seed, video_out=args.video, fps=args.fps,
                          overwrite=args.overwrite, cache_dir=args.cache_dir)
            print(report(replay, folder, read_result(folder)))
    except ReplayError as e:
        return _fail(str(e), e.status)
    except SettingError as e:
        return _fail(str(e), 2)
    except (DataUnavailableError, WriteFailedError) as e:
        return _fail(str(e), 1)
    return 0


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
