"""Agents' hyperparameters as files: one YAML file per agent, keyed by env family.

As RL Baselines3 Zoo keeps tuned hyperparameters beside its code, `agents/hyperparams/`
holds one file per agent, `<agent>.yml`. Its keys are `default` and env families (`family`:
the env id without `LayerTying-` and the version, in lower case: `gpt2`, `gpt2-tiny`,
`llama`, `llama-tiny`, `bert`, `bert-tiny`, `vit`, `vit-tiny`), each a table of
hyperparameters the agent declares (`Agent.hyperparameters()`):

    default:        # every environment
      lr: 1.0e-3
    gpt2-tiny:      # LayerTying-GPT2-Tiny-v0: on top of default, key by key
      lr: 3.0e-3

A run's values (`defaults`) are the `default` entry with its env family's entry on top. The
run harness (`agents.runs.spec.RunSpec`) builds the agent with them under the run's
`agent_kwargs`: file < `--config` < `--agent-kwargs`. `agents.make` reads no file: an agent
class's own defaults are its constructor's, and the shipped `default` entries equal them
(tests/test_hyperparams.py), so a file changes a run only where one of its family entries
says so.

Where the values come from, a *source*: `SHIPPED` (`"agents/hyperparams"`, wherever the
package is installed; a name under it names a shipped file), a folder of `<agent>.yml`
files (an agent without one there uses its shipped file), one `.yml` file (for the run's
agent), or None (no file: the agent's code defaults). Files are read with PyYAML's
`safe_load`; write floats with a dot (`1.0e-3`: YAML reads `1e-3` as a string, which the
check refuses). A bad file raises `SettingError` (argument `"hyperparams"`) naming the file,
the entry, the agent and the bad key, with the allowed ones.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tying_env.errors import SettingError

SHIPPED = "agents/hyperparams"  # the shipped files' folder, as runs and tracks name it
DEFAULT = "default"  # the entry for every environment
FOLDER = Path(__file__).resolve().parent
SUFFIXES = (".yml", ".yaml")
NO_FILE = "none"  # `--hyperparams none`: no file, the agents' code defaults


@dataclass(frozen=True)
class FileDefaults:
    """An agent's hyperparameters from a file, for one environment.

    `file`: the file's name (`agents/hyperparams/<agent>.yml` for a shipped one; None: no
    file); `entries`: the entries applied, in order; `values`: the hyperparameters.
    """

    file: str | None = None
    entries: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "entries": list(self.entries), "values": dict(self.values)}


def family(env_id: str | None) -> str | None:
    """The env family key of an env id (`LayerTying-GPT2-Tiny-v0` -> `gpt2-tiny`); None for
    an id not named `LayerTying-<family>-v<N>`."""
    match = re.fullmatch(r"LayerTying-(.+)-v\d+", env_id or "")
    return match.group(1).lower() if match else None


def entry_names() -> tuple[str, ...]:
    """The keys a hyperparameter file may hold: `default` and the registered env families."""
    from tying_env import ENV_IDS

    return (DEFAULT, *dict.fromkeys(f for f in map(family, ENV_IDS) if f))


def parse_source(text: str | Path | None) -> str | None:
    """A source as given on a command line: not given -> `SHIPPED`, `none` -> None."""
    if text is None:
        return SHIPPED
    return None if str(text) == NO_FILE else str(text)


def name_of(path: Path) -> str:
    """How runs name a hyperparameter file: package-relative for a shipped one."""
    try:
        return f"{SHIPPED}/{path.resolve().relative_to(FOLDER).as_posix()}"
    except ValueError:
        return str(path)


def is_shipped(source: str | Path) -> bool:
    """Whether `source` names the shipped files (`SHIPPED` or a name under it)."""
    text = Path(source).as_posix()
    return text == SHIPPED or text.startswith(f"{SHIPPED}/")


def _path(source: str | Path) -> Path:
    """`source` as a path: a name under `SHIPPED` is inside the installed package."""
    if is_shipped(source):
        return FOLDER / Path(source).as_posix()[len(SHIPPED):].lstrip("/")
    return Path(source)


def locate(agent: str, source: str | Path | None = SHIPPED) -> Path | None:
    """The file that holds `agent`'s hyperparameters under `source` (see the module doc);
    None when there is none."""
    if source is None:
        return None
    path = _path(source)
    if path.is_dir():
        own = path / f"{agent.replace(':', '.')}.yml"
        if own.is_file():
            return own
        return None if path.resolve() == FOLDER else locate(agent, SHIPPED)
    if path.is_file() and path.suffix in SUFFIXES:
        return path
    what = "is not a .yml file" if path.exists() else "does not exist"
    raise SettingError("hyperparams", f"{str(source)!r} {what}; expected a hyperparameter "
                                      "file (.yml), a folder of <agent>.yml files, or "
                                      f"{NO_FILE!r} for none")


def read(path: Path, agent: str) -> dict[str, dict[str, Any]]:
    """Every entry of the hyperparameter file `path`, each checked against `agent`'s
    declared hyperparameters (`agents.base.check_hyperparameters`)."""
    import yaml

    from agents.base import check_hyperparameters

    cls = agent_class(agent)
    name = name_of(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SettingError("hyperparams", f"cannot read {name}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise SettingError("hyperparams", f"{name} is not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SettingError("hyperparams", f"{name} must hold a mapping of env families to "
                                          f"hyperparameters, not {type(doc).__name__}")
    allowed = entry_names()
    for key, table in doc.items():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingError("hyperparams", f"{name}: {key!r} is not an env family{hint}; "
                                              f"allowed: {', '.join(allowed)}")
        if not isinstance(table, dict):
            raise SettingError("hyperparams", f"{name}: entry {key!r} must be a mapping of "
                                              f"hyperparameters ({{}} for none), not {table!r}")
        try:
            check_hyperparameters(cls, table)
        except SettingError as e:
            raise SettingError("hyperparams", f"{name}, entry {key!r}: {e}") from None
    return doc


def agent_class(agent: str) -> type:
    """The class of agent `agent`; a `SettingError` (argument `"agent"`) lists the agents."""
    import agents

    try:
        return agents.factory(agent)
    except ValueError as e:
        raise SettingError("agent", str(e)) from None


def defaults(agent: str, env_id: str | None, source: str | Path | None = SHIPPED
             ) -> FileDefaults:
    """`agent`'s hyperparameters for `env_id` from its file under `source`: the `default`
    entry, then the env family's on top (`env_id` None: `default` only)."""
    agent_class(agent)
    path = locate(agent, source)
    if path is None:
        return FileDefaults()
    doc = read(path, agent)
    used = tuple(key for key in (DEFAULT, family(env_id)) if key is not None and key in doc)
    values: dict[str, Any] = {}
    for key in used:
        values.update(doc[key])
    return FileDefaults(file=name_of(path), entries=used, values=values)
