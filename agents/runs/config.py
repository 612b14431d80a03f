"""`--config FILE`: a command line's options from a YAML, TOML or JSON file.

A config file holds the same settings as the flags, by option name (`env_kwargs` or
`env-kwargs`; `env` for `--env`), with plain values: numbers, strings, lists (for
comma-separated options such as the benchmark's `agents` and `seeds`), tables (for the
JSON options `env_kwargs` and `agent_kwargs`) and booleans (for switches such as
`no_progress`). A run's own `run.json` is a valid config too, so
`train_agent.py --config runs/a/run.json --out runs/b` repeats run `a` in `b` (with the
hyperparameter file it recorded, as that file is now).

Every value is turned into the text its flag would take and handed to the parser as
that flag's default, so a config goes through exactly the checks the flags go through,
and a flag given on the command line overrides it. The JSON options are merged key by
key instead: `--env-kwargs '{"n_layer": 8}'` changes `n_layer` and keeps the config's
other environment settings.

Parsing uses the standard library's `tomllib` and PyYAML's `safe_load` (no code runs
from a config file).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.hyperparams import NO_FILE
from tying_env.errors import SettingError

SUFFIXES = (".yaml", ".yml", ".toml", ".json")
RUN_FILE_FORMAT = "layer-tying-gym/run"


def read_config(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML, TOML or JSON file (a `run.json` is flattened)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise SettingError("config", f"{str(path)!r} is not a config file; expected one of "
                                     f"{', '.join(SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SettingError("config", f"cannot read {path}: {e.strerror or e}") from None
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            config = tomllib.loads(text)
        elif path.suffix == ".json":
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except Exception as e:  # each parser has its own error type; all mean "not valid"
        raise SettingError("config", f"{path} is not valid {path.suffix[1:].upper()}: "
                                     f"{e}") from None
    if not isinstance(config, dict):
        raise SettingError("config", f"{path} must hold a mapping of settings, not "
                                     f"{type(config).__name__}")
    if config.get("format") == RUN_FILE_FORMAT and isinstance(config.get("settings"), dict):
        config = {**config["settings"], **{k: v for k, v in config.items()
                                           if k not in ("format", "settings") and v is not None}}
        record = config.get("hyperparams")
        if isinstance(record, dict):  # the run's hyperparameter file, as --hyperparams takes it
            config["hyperparams"] = record.get("file") or NO_FILE
    return config


def _as_flag_text(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by every name a config may use for them."""
    names: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse offers no public list of its options
        if not action.option_strings or action.dest in ("help", "config"):
            continue
        names[action.dest] = action
        for option in action.option_strings:
            if option.startswith("--"):
                names[option[2:]] = action
                names[option[2:].replace("-", "_")] = action
    return names


def parse_with_config(parser: argparse.ArgumentParser,
                      argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse `argv` with the defaults of its `--config FILE`, if any (see the module doc).

    A bad config exits like a bad flag: `argument --config: ...`, status 2.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return parser.parse_args(argv)
    try:
        config = read_config(known.config)
    except SettingError as e:
        parser.error(f"argument --config: {e}")
    actions = _actions(parser)
    unknown = sorted(k for k in config if k not in actions)
    if unknown:
        allowed = sorted({a.dest for a in actions.values()})
        parser.error(f"argument --config: {known.config}: unknown setting(s) "
                     f"{', '.join(unknown)}; allowed: {', '.join(allowed)}")
    defaults: dict[str, Any] = {}
    merged: dict[str, dict[str, Any]] = {}
    for key, value in config.items():
        action = actions[key]
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                parser.error(f"argument --config: {known.config}: {key}={value!r} must be "
                             "true or false")
            defaults[action.dest] = value
            continue
        if isinstance(value, dict):
            merged[action.dest] = value
        defaults[action.dest] = _as_flag_text(value)  # parsed as if given as the flag
        action.required = False  # the config supplies it
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    for dest, table in merged.items():  # JSON options: the command line's keys win
        given = getattr(args, dest)
        if isinstance(given, str):  # an option that keeps its JSON text (the benchmark's)
            try:
                parsed = json.loads(given)
            except json.JSONDecodeError:
                continue  # the command's own check reports it
            if isinstance(parsed, dict):
                setattr(args, dest, json.dumps({**table, **parsed}))
        elif isinstance(given, dict):
            setattr(args, dest, {**table, **given})
    return args
