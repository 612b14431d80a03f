"""Drive one run: build the environment and the agent, run the episode, save everything.

`run` takes a `RunSpec` and writes the run folder:

| path            | content                                                         |
|-----------------|-----------------------------------------------------------------|
| `log.jsonl`     | one JSON line per decision (see `agents.runs.runlog.RunLog`)    |
| `tb/`           | TensorBoard scalars                                             |
| `result.json`   | final full-split perplexities, parameters, memory, tie map, ... |
| `model/`        | the final model, untied, as a Hugging Face folder               |
| `compact/`      | the final model, root blocks only (`tying_env.export`)          |
| `agent/`        | the agent's saved state                                         |
| `tie_map.png`, `curves.png` | figures of the run                                  |
| `run.json`      | the run's settings (what resuming reads back)                   |
| `checkpoint/`   | the latest checkpoint (see `agents.runs.resume`)                |
| `mlruns/`, `wandb/` | the tracker's offline run (`--tracker`; `agents.runs.tracking`) |

A resumed run (`spec.resume`) finishes as if it had never stopped: on CPU
`result.json`, the log and the final weights equal an uninterrupted run's except
the timing fields (`agents.runs.result.TIMING_FIELDS`, and `wall_s` and `timestamp` in
`log.jsonl`).

The folder is locked first (`agents.runs.folder`): a run never overwrites another
run's folder unless told to, and two runs never write one folder at the same time.

Errors: a bad setting raises `SettingError` (`argument` as
in `agents.runs.spec`, `"agent_kwargs"` for hyperparameters the agent refuses);
a dataset that cannot be had here raises `DataUnavailableError`.
A run that diverges is not an error: it ends early and says so in `result.json`.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from agents.base import Agent, OneEpisode
from agents.runs import folder, resume, tracking
from agents.runs.card import model_card
from agents.runs.factory import make_agent, make_env
from agents.runs.plots import plot_curves, plot_tie_map
from agents.runs.protocol import run_train_evaluate
from agents.runs.result import PUBLISHED_METRIC_NOTE, RunResult, published_metric
from agents.runs.runlog import RunLog
from agents.runs.source import agent_source
from agents.runs.spec import RUN_FILE, RunSpec
from tying_env import checkpoint as ckpt
from tying_env.errors import WriteFailedError
from tying_env.files import write_json

if TYPE_CHECKING:
    from tying_env.env import LayerTyingEnv

def run(spec: RunSpec) -> RunResult:
    """Train (or continue), evaluate, save and plot one run; returns its result.

    Raises `SettingError` for a bad setting or a folder it may not use
    (`agents.runs.folder`), `WriteFailedError` when a file cannot be written (the last
    checkpoint stays valid), `resume.Preempted` when stopped by a signal (after writing
    a checkpoint), `DataUnavailableError` when the data cannot be had here.
    """
    t_start = time.perf_counter()
    spec.check()
    created = not spec.folder.exists()
    lock = folder.lock(spec)
    try:
        return _run_locked(spec, t_start)
    except BaseException:
        if created:  # a run that wrote nothing leaves no folder behind
            lock.release()
            folder.remove_if_empty(spec.folder)
        raise
    finally:
        lock.release()


def _run_locked(spec: RunSpec, t_start: float) -> RunResult:
    try:
        return _run_and_save(spec, t_start)
    except WriteFailedError as e:
        kept = ckpt.find_checkpoint(spec.folder)
        hint = (f" Fix the cause, then continue from the last checkpoint ({kept}) with: "
                f"train_agent.py --resume {spec.folder}" if kept is not None
                else " Fix the cause and start the run again.")
        raise WriteFailedError(e.path, f"{e}.{hint}") from e


def _run_and_save(spec: RunSpec, t_start: float) -> RunResult:
    if spec.train_episodes:
        return run_train_evaluate(spec)
    saved = resume.read_checkpoint(spec) if spec.resume else None  # verified; nothing written
    env, recorder, guarded, agent = build(spec)
    base: LayerTyingEnv = env.unwrapped
    try:
        if saved is not None:
            resume.restore(spec, saved, recorder, guarded, agent)
            print(f"resuming {spec.folder} at decision {base.decision} of {base.budget}",
                  file=sys.stderr)
        else:
            start_fresh(spec)
        checkpointer = resume.Checkpointer(spec, base, recorder, agent,
                                           last=base.decision if saved is not None else 0)
        try:
            drive(agent, checkpointer)
        finally:
            recorder.finish()
    except BaseException:
        env.close()
        raise
    last = recorder.records[-1] if recorder.records else recorder.start or {}
    if last.get("diverged"):
        print(f"warning: training diverged at decision {last.get('decision')} of {base.budget} "
              "(non-finite loss); the episode ended early. Non-finite perplexities are "
              "written as null in result.json.", file=sys.stderr)
    elif not guarded.finished:
        print(f"warning: the agent stopped after {len(recorder.records)} of {base.budget} "
              "decisions", file=sys.stderr)

    result = summarize(spec, base, recorder, finished=guarded.finished)
    result.write(spec.folder)  # early, in case saving or plotting fails (not yet complete)
    result = result.replace(files=[RUN_FILE, *save_outputs(spec, base, recorder, agent, result)])
    result = result.replace(total_seconds=time.perf_counter() - t_start)
    result.write(spec.folder)
    env.close()
    return result


def build(spec: RunSpec) -> tuple[gym.Env, RunLog, OneEpisode, Agent]:
    """The environment, its recorder and one-episode guard, and the agent."""
    env = make_env(spec)
    try:
        recorder = RunLog(env, spec.folder, progress=spec.progress,
                          desc=f"{spec.agent} s{spec.seed}", tracker=spec.tracker,
                          tracker_group=spec.tracker_group)
        guarded = OneEpisode(recorder)
        agent = make_agent(spec, guarded)
    except BaseException:
        env.close()
        raise
    recorder.agent = agent  # its metrics() are logged with every decision
    return env, recorder, guarded, agent


def start_fresh(spec: RunSpec) -> None:
    """A new run in `spec.out`: no stale events or checkpoints; the settings in run.json."""
    shutil.rmtree(spec.folder / "tb", ignore_errors=True)
    ckpt.remove_checkpoints(spec.folder)
    write_json(spec.folder / RUN_FILE, spec.to_run_file())


def drive(agent: Agent, checkpointer: resume.Checkpointer) -> None:
    """Run the agent's episode, checkpointing at its boundaries when it offers them
    (`Agent.checkpoints`), and stopping at the next boundary after SIGTERM or SIGINT
    (see `agents.runs.resume`)."""
    if not agent.checkpoints:
        if checkpointer.every > 0:
            print(f"warning: agent {agent.name!r} offers no checkpoint boundaries "
                  "(it declares checkpoints = False): this run cannot be resumed",
                  file=sys.stderr)
        agent.run()
        return
    with checkpointer.stop_on_signals():
        agent.run(on_boundary=checkpointer)


def summarize(spec: RunSpec, env: LayerTyingEnv, recorder: RunLog, *,
              finished: bool) -> RunResult:
    """The run's result: evaluates the final model on the full validation and test splits
    (not yet complete: the driver adds the files it saved and the total time)."""
    records, start = recorder.records, recorder.start or {}
    last = records[-1] if records else start
    t_eval = time.perf_counter()
    valid, test = env.evaluate("valid"), env.evaluate("test")
    final_val, final_test = valid.perplexity, test.perplexity
    eval_seconds = time.perf_counter() - t_eval
    assert env.model is not None
    fractions = [r["trainable_fraction"] for r in records] or [start["trainable_fraction"]]
    diverged = bool(last.get("diverged", False))
    notes = []
    if diverged:
        notes.append("training diverged (non-finite loss): the episode ended early")
    if not (math.isfinite(final_val) and math.isfinite(final_test)):
        notes.append("non-finite final perplexities are written as null")
    published = published_metric(last)  # with test_eval_every > 0 only
    if published:
        notes.append(PUBLISHED_METRIC_NOTE)
    return RunResult(
        agent=spec.agent, agent_kwargs=spec.agent_kwargs, env_id=spec.env_id,
        env_kwargs=env.cfg.to_dict(), seed=spec.seed, track=spec.track,
        device=str(env.device), final_val_ppl=final_val, final_test_ppl=final_test,
        final_val_accuracy=valid.accuracy, final_test_accuracy=test.accuracy, **published,
        n_outputs=valid.n_outputs, optimal_ppl=env.optimal_ppl,
        optimal_val_ppl=valid.optimal_ppl, optimal_test_ppl=test.optimal_ppl,
        initial_val_ppl=start.get("val_ppl"), last_val_ppl=last.get("val_ppl"),
        trainable_params=last["trainable_params"], total_params=last["total_params"],
        published_trainable_params=last.get("published_trainable_params"),
        trainable_fraction=last["trainable_fraction"],
        mean_trainable_fraction=float(np.mean(fractions)), tie_map=list(env.model.ties),
        memory_bytes=last["memory_bytes"],
        peak_memory_bytes=max(r["memory_bytes"]["total"] for r in [start, *records]),
        train_steps=last["train_steps"], decisions=len(records), budget=env.budget,
        all_decisions=finished, diverged=diverged, wall_seconds=recorder.wall_seconds,
        eval_seconds=eval_seconds, notes=notes, agent_source=agent_source(spec.agent_class()))


def save_outputs(spec: RunSpec, env: LayerTyingEnv, recorder: RunLog, agent: Agent,
                 result: RunResult) -> list[str]:
    """Models (expanded and compact), the agent and the figures; returns their names.

    `model/` is self-contained: the corpus's tokenizer (`tying_env.export.run_tokenizer`)
    and a model card written from `result` (`agents.runs.card`) sit beside the weights.
    With `spec.sb3_zip`, an SB3 agent also writes `agent/sb3.zip` (its `save_zip`: SB3's
    own format, which pickles, for interoperability only); other agents print a note and
    write no zip.
    """
    from tying_env.export import quiet_hf, run_tokenizer, save_compact, save_expanded

    assert env.model is not None
    out = spec.folder
    with quiet_hf():
        tokenizer, note = run_tokenizer(env.model, env.corpus, env.cfg,
                                        spec.make_kwargs.get("cache_dir"))
        card = model_card(result, folder=out / "model", compact=out / "compact",
                          tokenizer_note=note, has_tokenizer=tokenizer is not None,
                          n_positions=getattr(env.model.config, "max_position_embeddings",
                                              None),
                          family=env.model.family.name,
                          hyperparameters=spec.agent_hyperparameters())
        save_expanded(env.model, out / "model", tokenizer=tokenizer, card=card)
    save_compact(env.model, out / "compact")
    agent.save(out / "agent")
    if spec.sb3_zip:
        save_zip = getattr(agent, "save_zip", None)
        if callable(save_zip):
            save_zip(out / "agent" / "sb3.zip")
        else:
            print(f"note: --sb3-zip applies to Stable-Baselines3 agents only; {spec.agent!r} "
                  "is not one, so no agent/sb3.zip was written", file=sys.stderr)
    title = f"{spec.agent} on {spec.env_id}, seed {spec.seed}"
    plot_tie_map(recorder.records, out / "tie_map.png", start=recorder.start,
                 title=f"tie map: {title}")
    final = result.final_val_ppl
    plot_curves(recorder.records, out / "curves.png", start=recorder.start,
                optimal_ppl=env.optimal_ppl,
                final_val_ppl=final if final is not None and math.isfinite(final) else None,
                title=title)
    files = ["log.jsonl", "tb", "model", "compact", "agent", "tie_map.png", "curves.png"]
    tracked = tracking.FOLDERS.get(spec.tracker or "")  # where the tracker wrote, if here
    return [*files, tracked] if tracked is not None and (out / tracked).is_dir() else files
