"""Experiment trackers besides TensorBoard, chosen by `RunSpec.tracker`, and a run's parameters.

`agents.runs.runlog.RunLog` feeds a `Tracker` what it writes to TensorBoard: the run's
parameters once (`run_params`: the environment's settings and the agent's
hyperparameters), every decision's metrics (the same values as the TensorBoard scalars,
agent internals included) and, when the episode ends, the final metrics. A
train-then-evaluate run (`agents.runs.protocol`) feeds it its per-episode curves instead.
`open_tracker(None, ...)` is None: no tracker, TensorBoard only.

| name     | needs (extra)                                    | writes                          |
|----------|--------------------------------------------------|---------------------------------|
| `mlflow` | `mlflow-skinny` (`pip install -e '.[tracking]'`) | `$MLFLOW_TRACKING_URI`, else    |
|          |                                                  | `mlruns/` in the run folder     |
| `wandb`  | `wandb` (`pip install -e '.[wandb]'`)            | `wandb/` in the run folder      |
|          |                                                  | (offline unless `$WANDB_MODE`)  |

A `group` (`RunSpec.tracker_group`; a benchmark sets its folder's name) gathers runs:
W&B's run group, an MLflow tag `group`.

**MLflow.** With `MLFLOW_TRACKING_URI` set, the runs go where it says (a server, a
database, a shared folder), as MLflow users expect. Without it, MLflow runs offline here:
the store is MLflow's local file store in `<run folder>/mlruns` (no server, no database).
Either way one experiment (`EXPERIMENT`) holds the runs, and each run is tagged with its
run folder (`run_folder`). MLflow 3 keeps
that store in maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE=true`,
and it sends usage telemetry unless `MLFLOW_DISABLE_TELEMETRY=true`; both variables are
set to `true` when mlflow is first used here, unless they are already set. Read a run
back with `mlflow_client` (or `mlflow ui --backend-store-uri <the store_uri>` with
`MLFLOW_ALLOW_FILE_STORE=true` in the environment).
A resumed run continues the latest MLflow run tagged with its run folder. MLflow cannot
delete values, so decisions redone after a resume (those after the checkpoint) appear
twice in its metric histories, with the same step and, except the timing metrics, the
same values.

**Weights & Biases.** W&B runs offline by default (`mode="offline"`, unless the user set
`WANDB_MODE`): nothing leaves the machine, and the run is a folder
`<run folder>/wandb/offline-run-<time>-<id>/` that `wandb sync` uploads later (W&B's own
service also writes a debug log under `$WANDB_CACHE_DIR`, default `~/.cache/wandb/logs`).
Offline, the environment gets `WANDB_ERROR_REPORTING=false` (unless set) and W&B's system
monitor and machine-info probe (which may query cloud metadata endpoints) are off, so
nothing tries the network. The project is `$WANDB_PROJECT`, else `EXPERIMENT`; the run's
name is the run's (`qlearning s0`); its config holds `run_params`; every metric is logged
against the metric `step` (`STEP`: the decision, or the episode in a train-then-evaluate
run), and how the episode ended goes to the summary. W&B does not capture the console
(`console="off"`): `log.jsonl` and the run's own output hold it.
A resumed run continues its W&B run (same id, `resume="allow"`) when both its first part
and this one are online; redone decisions then appear twice against `step`, as in MLflow.
W&B cannot continue an offline run: offline, the same id makes a second folder, and
`wandb sync` does not join two folders of one id (wandb/wandb#3841). So an offline resume
starts a new W&B run in the same group, tagged `resumed`, with `resumed_from` (the earlier
run's id) and the parameters in its config; it holds the decisions from the checkpoint on.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tying_env.errors import SettingError
from tying_env.files import to_jsonable

if TYPE_CHECKING:
    import gymnasium as gym
    from mlflow.tracking import MlflowClient
    from wandb.sdk.wandb_run import Run as WandbRun

    from agents.base import Agent

Param = bool | int | float | str
MLRUNS = "mlruns"
WANDB = "wandb"  # W&B's folder in the run folder
EXPERIMENT = "layer-tying-gym"
STEP = "step"  # W&B: the metric every other metric is plotted against
# tracker -> (the package it needs, the extra that installs it)
PACKAGES = {"mlflow": ("mlflow-skinny", "tracking"), "wandb": ("wandb", "wandb")}
FOLDERS = {"mlflow": MLRUNS, "wandb": WANDB}  # what each tracker writes into a run folder


class Tracker(Protocol):
    """What `RunLog` calls; every method may be called while the run goes on."""

    resumed: bool  # it continues an earlier run of the folder, which has the parameters

    def log_params(self, params: Mapping[str, Param]) -> None:
        """The run's parameters (once per run)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Finite numbers at one step (a decision; 0 is the state at reset)."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Text about the run (e.g. how the episode ended)."""

    def close(self, finished: bool) -> None:
        """Stop logging: `finished` when the episode ended, False when the run stopped early."""


def check(name: str | None) -> None:
    """SettingError (`argument="tracker"`) unless tracker `name` is known and installed."""
    if name is None:
        return
    if name not in PACKAGES:
        raise SettingError("tracker", f"tracker={name!r} is unknown; allowed: "
                                      f"{', '.join(PACKAGES)} (or none)")
    package, extra = PACKAGES[name]
    if importlib.util.find_spec(name) is None:
        raise SettingError("tracker", f"tracker={name!r} needs the package {package!r}, which "
                                      f"is not installed: pip install -e '.[{extra}]' (the "
                                      f"extra {extra!r})")


def open_tracker(name: str | None, folder: str | Path, run_name: str, resume: bool = False,
                 group: str | None = None) -> Tracker | None:
    """The tracker `name` logging into the run folder `folder` (None for `name=None`).

    `resume` continues the tracker's latest run in that folder where it can (see the
    module doc); `group` gathers this run with others (W&B group, MLflow tag `group`).
    """
    check(name)
    if name is None:
        return None
    if name == "wandb":
        return WandbTracker(folder, run_name, resume=resume, group=group)
    return MlflowTracker(folder, run_name, resume=resume, group=group)


# ------------------------------------------------------------------ parameters
def run_params(env: gym.Env, agent: Agent | None = None) -> dict[str, Param]:
    """The run's parameters, flat: `env_id`, `env.<setting>` for every `EnvConfig` field
    (`env.unwrapped.cfg.to_dict()`), `agent`, `seed` and `agent.<hyperparameter>`.

    The agent's hyperparameters are all it runs with where it says so (a dataclass
    `cfg`, as the Q-learners; an SB3 agent's budget-sized defaults once its model is
    built), else those it was given. Values are bools, numbers or strings (lists and
    dicts as JSON, `None` as `"None"`).
    """
    base = env.unwrapped
    spec = getattr(base, "spec", None)
    params: dict[str, Any] = {"env_id": spec.id if spec is not None else type(base).__name__}
    cfg = getattr(base, "cfg", None)
    if cfg is not None:
        params.update(_flat("env.", cfg.to_dict()))
    if agent is not None:
        params["agent"] = agent.name
        params["seed"] = agent.seed
        params.update(_flat("agent.", agent_hparams(agent)))
    return {key: _param(value) for key, value in params.items()}


def agent_hparams(agent: Agent) -> dict[str, Any]:
    """The hyperparameters `agent` runs with (see `run_params`)."""
    cfg = getattr(agent, "cfg", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    algorithm, budget = getattr(agent, "algorithm", None), getattr(agent, "budget", None)
    defaults = getattr(algorithm, "defaults", None)
    if callable(defaults) and isinstance(budget, int):  # an SB3 agent whose model is built
        return {**defaults(budget), **agent.hparams}
    return dict(agent.hparams)


def _flat(prefix: str, values: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(f"{prefix}{key}.", value)
        else:
            yield f"{prefix}{key}", value


def _param(value: Any) -> Param:
    value = to_jsonable(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "None"
    return json.dumps(value)


# ------------------------------------------------------------------ MLflow
def store_uri(folder: str | Path) -> str:
    """The `file:` URI of the MLflow store in the run folder `folder`."""
    return (Path(folder) / MLRUNS).resolve().as_uri()


def tracking_uri(folder: str | Path) -> str:
    """Where the runs of the run folder `folder` go: `MLFLOW_TRACKING_URI` when it is set,
    else the folder's own store (`store_uri`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or store_uri(folder)


def mlflow_client(folder: str | Path) -> MlflowClient:
    """An `MlflowClient` on the store of the run folder `folder` (`tracking_uri`)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(folder))


class MlflowTracker:
    """One MLflow run in `<folder>/mlruns`, logged through `MlflowClient` (no global
    active run, so a caller's own MLflow runs are left alone)."""

    def __init__(self, folder: str | Path, run_name: str, resume: bool = False,
                 group: str | None = None):
        from mlflow.entities import RunStatus

        self._status = RunStatus
        self.client = mlflow_client(folder)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(EXPERIMENT))
        here = str(Path(folder).resolve())
        runs = (self.client.search_runs([experiment_id], order_by=["attributes.start_time DESC"],
                                        filter_string=f"tags.run_folder = '{_quoted(here)}'",
                                        max_results=1) if resume else [])
        self.resumed = bool(runs)
        if runs:
            self.run_id = runs[0].info.run_id
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            tags = {"run_folder": here, **({"group": group} if group else {})}
            run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id

    def log_params(self, params: Mapping[str, Param]) -> None:
        from mlflow.entities import Param as MlflowParam

        items = [MlflowParam(key, str(value)) for key, value in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def close(self, finished: bool) -> None:
        status = self._status.FINISHED if finished else self._status.KILLED
        self.client.set_terminated(self.run_id, self._status.to_string(status))


def _quoted(text: str) -> str:
    """`text` inside single quotes of an MLflow search filter."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


# ------------------------------------------------------------------ Weights & Biases
def wandb_mode() -> str:
    """W&B's mode here: `WANDB_MODE` when it is set, else `"offline"`."""
    return os.environ.get("WANDB_MODE") or "offline"


# a W&B run's folder: `offline-run-<date>_<time>-<id>` (offline) or `run-<date>_<time>-<id>`
_WANDB_RUN = re.compile(r"(?P<offline>offline-)?run-(?P<time>\d{8}_\d{6})-(?P<id>\w+)")


def wandb_runs(folder: str | Path) -> list[Path]:
    """The W&B run folders in the run folder `folder` (`wandb/*run-<time>-<id>`), oldest
    first."""
    found = []
    for path in (Path(folder) / WANDB).glob("*run-*"):
        match = _WANDB_RUN.fullmatch(path.name)
        if match is not None and path.is_dir():
            found.append((match["time"], path.stat().st_mtime, path))
    return [path for *_, path in sorted(found)]


class WandbTracker:
    """One W&B run in `<folder>/wandb`, offline unless `WANDB_MODE` says otherwise; the
    run object is kept here (`reinit="create_new"`), so a caller's own W&B run is left
    alone."""

    def __init__(self, folder: str | Path, run_name: str, resume: bool = False,
                 group: str | None = None):
        import wandb

        mode = wandb_mode()
        offline = mode in ("offline", "dryrun")
        if offline:
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # no crash reports
        earlier = wandb_runs(folder)[-1:] if resume else []
        before = _WANDB_RUN.fullmatch(earlier[0].name) if earlier else None
        continues = before is not None and not before["offline"] and not offline
        after = before["id"] if before is not None and not continues else None
        wanted = {"console": "off", "x_disable_stats": offline,
                  "x_disable_machine_info": offline}
        known = getattr(wandb.Settings, "model_fields", wanted)  # older versions lack some
        self.run: WandbRun = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or EXPERIMENT, dir=str(folder),
            name=run_name, group=group, mode=mode,  # type: ignore[arg-type]
            id=before["id"] if continues and before else None,
            resume="allow" if continues else None,
            tags=["resumed"] if after else None,
            config={"resumed_from": after} if after else None, reinit="create_new",
            settings=wandb.Settings(**{k: v for k, v in wanted.items() if k in known}))
        self.resumed = bool(self.run.resumed)
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)

    def log_params(self, params: Mapping[str, Param]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**{k: float(v) for k, v in metrics.items()}, STEP: int(step)})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.run.summary.update({k: str(v) for k, v in tags.items()})

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)
