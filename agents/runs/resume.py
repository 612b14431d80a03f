"""Checkpoints of a run, stopping a run on a signal, and continuing a run from one.

Every `checkpoint_every` decisions, at the agent's next consistent point (after a
decision for step-by-step agents, at a rollout boundary for SB3 ones), the
`Checkpointer` writes `out/checkpoint`: the environment (root blocks, tie
map, inner AdamW and schedule, counters, its generators), the agent's full state,
the global generators (Python, NumPy, torch) and the position in `log.jsonl`, as
safetensors plus JSON with a sha256 manifest, swapped in atomically (see
`tying_env.checkpoint`).

Preemption: while the agent runs, SIGTERM and SIGINT (Slurm's preemption, Ctrl-C) do
not kill the run; they ask the `Checkpointer` to write a checkpoint at the agent's next
boundary and raise `Preempted` there, so at most the work since the last boundary is
lost (one decision for step-by-step agents, one rollout for on-policy SB3 agents) and
redone identically on `--resume`. The same signal a second time (Ctrl-C twice) stops
the run at once.

`read_checkpoint` verifies a checkpoint (files, settings, agent, log) before
anything is touched; `restore` loads it into a fresh environment and agent and
only then cuts `log.jsonl` back to it. Every refusal is a
`SettingError` with `argument="resume"`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from agents.base import Agent, OneEpisode
from agents.runs.result import is_finished
from agents.runs.runlog import RunLog, check_position
from agents.runs.spec import RunSpec
from tying_env import checkpoint as ckpt
from tying_env.errors import SettingError

if TYPE_CHECKING:
    from tying_env.env import LayerTyingEnv

RUN_STATE_FORMAT = "layer-tying-gym/run-state-v1"
PARTS = ("state", "env", "agent", "rng")


class Preempted(Exception):
    """The run was stopped by a signal after writing a checkpoint; `--resume` continues it."""

    def __init__(self, signum: int, decision: int, budget: int, folder: Path):
        self.signum, self.decision, self.folder = signum, decision, folder
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at decision {decision} of {budget}; the checkpoint "
                         f"in {folder / 'checkpoint'} holds it. Continue with: "
                         f"train_agent.py --resume {folder}")

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class Checkpointer:
    """Called by the agent at its boundaries; writes a checkpoint once `every` decisions
    have passed since the last one, or at once (then raises `Preempted`) after a
    stopping signal (see `stop_on_signals`)."""

    def __init__(self, spec: RunSpec, env: LayerTyingEnv, recorder: RunLog, agent: Agent,
                 last: int = 0):
        self.spec = spec
        self.every = spec.checkpoint_every
        self.env = env
        self.recorder = recorder
        self.agent = agent
        self.last = last
        self.signum: int | None = None  # the stopping signal received, if any

    def __call__(self) -> None:
        if self.signum is not None:
            self.save()
            raise Preempted(self.signum, self.env.decision, self.env.budget, self.spec.folder)
        if self.every > 0 and self.env.decision - self.last >= self.every:
            self.save()

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While inside, SIGTERM and SIGINT ask for a checkpoint and a stop at the next
        boundary (the same signal a second time acts as usual). Only in the main thread."""
        signums = (signal.SIGTERM, signal.SIGINT)
        try:
            previous = {s: signal.getsignal(s) or signal.SIG_DFL for s in signums}

            def ask_to_stop(signum: int, frame: FrameType | None) -> None:
                self.signum = signum
                signal.signal(signum, previous[signum])  # the same signal again: as usual

            for s in signums:
                signal.signal(s, ask_to_stop)
        except ValueError:  # not the main thread: signals stay as they are
            yield
            return
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def save(self) -> None:
        """Write `out/checkpoint` (atomically) for the current decision."""
        agent_tensors, agent_meta = self.agent.get_state()
        state = dict(format=RUN_STATE_FORMAT, settings=self.spec.settings(),
                     decision=self.env.decision, budget=self.env.budget,
                     log=self.recorder.position(), start=self.recorder.start,
                     wall_s=self.recorder.wall_seconds)
        ckpt.write_checkpoint(self.spec.folder, {
            "state": ({}, state),
            "env": self.env.get_state(),
            "agent": (agent_tensors, {"agent": self.spec.agent, "state": agent_meta}),
            "rng": ckpt.global_rng_state(),
        })
        self.last = self.env.decision


def read_checkpoint(spec: RunSpec) -> dict[str, ckpt.Part]:
    """The checkpoint of `spec.out`, verified against its files, run.json and log.jsonl."""
    folder = spec.folder
    if ckpt.find_checkpoint(folder) is None:
        raise SettingError("resume", f"{folder} holds no checkpoint ({folder}/checkpoint is "
                                     "missing): the run was started with --checkpoint-every 0 "
                                     "or stopped before its first checkpoint; start it again")
    try:
        parts = ckpt.read_checkpoint(folder)
        missing = [p for p in PARTS if p not in parts]
        if missing:
            raise ckpt.CheckpointError(f"the checkpoint in {folder} lacks {', '.join(missing)}")
        state = parts["state"][1]
        ckpt.require(state, ("format", "settings", "decision", "log", "start", "wall_s"), "run")
        if state["format"] != RUN_STATE_FORMAT:
            raise ckpt.CheckpointError(f"the checkpoint in {folder} has format "
                                       f"{state['format']!r}; expected {RUN_STATE_FORMAT!r}")
        diff = ckpt.differences(spec.settings(), state["settings"], ("run.json", "the checkpoint"))
        if diff:
            raise ckpt.CheckpointError(f"the checkpoint in {folder} is not of the run described "
                                       f"by {folder / 'run.json'}: " + "; ".join(diff))
        saved_agent = parts["agent"][1].get("agent")
        if saved_agent != spec.agent or "state" not in parts["agent"][1]:
            raise ckpt.CheckpointError(f"the checkpoint holds agent {saved_agent!r}, the run "
                                       f"{spec.agent!r}")
        check_position(folder / "log.jsonl", state["log"])
    except (ckpt.CheckpointError, ValueError, KeyError, TypeError) as e:
        raise SettingError("resume", f"cannot resume: {e}") from None
    return parts


def restore(spec: RunSpec, parts: dict[str, ckpt.Part], recorder: RunLog, guarded: OneEpisode,
            agent: Agent) -> None:
    """Load the checkpoint into the fresh env and agent; only then touch the run folder."""
    base: LayerTyingEnv = recorder.unwrapped
    recorder.env.reset(seed=spec.seed)  # the wrappers below the recorder want one reset
    try:
        obs, info = base.set_state(*parts["env"])
        tensors, meta = parts["agent"]
        agent.set_state(tensors, meta["state"])
        restore_global_rngs = ckpt.global_rng_setter(*parts["rng"])
    except (ckpt.CheckpointError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise SettingError("resume", f"cannot resume from the checkpoint in {spec.folder}: "
                                     f"{e}") from None
    if is_finished(spec.folder):
        raise SettingError("resume", f"the run in {spec.folder} has finished (its result.json "
                                     "is complete): there is nothing to resume")
    # everything is loaded: only now is the run folder written to
    state = parts["state"][1]
    recorder.resume(state["log"], state["start"], info, float(state["wall_s"]))
    guarded.resume(obs, info)
    restore_global_rngs()  # last: nothing may draw from them before the agent goes on
