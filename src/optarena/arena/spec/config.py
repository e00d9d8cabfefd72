"""Experiment files: every setting of a comparison in one TOML file.

    name = "cifar-study"
    tasks = ["digits", "fashion_mnist_mlp"]
    optimizers = ["adamw", "sgdm", "adaburst"]
    trials = 12
    seeds = 3
    epochs = 10          # optional: each task's default otherwise
    out = "runs/cifar-study"

Keys are the fields of :class:`~optarena.arena.spec.experiment.Experiment`. A malformed file, an unknown
key or a value of the wrong type is reported with the file, the line and the key.

``protocol = "powered"`` (or ``--protocol powered``) fills the settings the file and the command line leave
unset from the preset (:data:`~optarena.arena.spec.experiment.PROTOCOLS`); whatever they set wins.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any

from optarena.arena.spec.experiment import Experiment, protocol_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "tasks": (list,),
    "optimizers": (list,),
    "trials": (int,),
    "seeds": (int,),
    "epochs": (int,),
    "target": (int, float),
    "out": (str,),
    "storage": (str,),
    "device": (str,),
    "threads": (int,),
    "data_dir": (str,),
    "subset": (int,),
    "eval_subset": (int,),
    "sampler_seed": (int,),
    "sampler": (str,),
    "prune": (bool,),
    "tensorboard": (str,),
    "variants": (dict,),
    "task_options": (dict,),
    "protocol": (str,),
    "tune_seeds": (int,),
    "max_widenings": (int,),
    "widen_factor": (int, float),
    "tune_weight_decay": (bool,),
}


class ConfigError(ValueError):
    """A problem in an experiment file, located by line and key."""


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^[ \t]*{re.escape(key)}[ \t]*=", re.MULTILINE)
    match = pattern.search(text)
    return None if match is None else text.count("\n", 0, match.start()) + 1


def load_experiment_file(path: str | Path, **overrides: Any) -> Experiment:
    """Read an experiment from a TOML file; ``overrides`` (e.g. from the command line) win."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such experiment file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (an experiment file is a TOML file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the experiment file ({error.strerror or error})") from error
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from error
    fields = {f.name for f in dataclasses.fields(Experiment)}
    for key, value in data.items():
        line = _line_of(text, key)
        where = f"{path}:{line}" if line else str(path)
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(fields))}")
        expected = _TYPES[key]
        if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{where}: key {key!r} must be of type {names}, got {value!r}")
        if key in ("tasks", "optimizers") and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: key {key!r} must be a list of names, got {value!r}")
        if key == "target" and not math.isfinite(value):
            raise ConfigError(f"{where}: key 'target' must be a finite number, got {value!r}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        data = {**protocol_settings(data.get("protocol", "quick")), **data}
        return Experiment(**data)
    except ValueError as error:
        message = str(error)
        key = {"Unknown optimizer": "optimizers", "Unknown task": "tasks"}.get(
            message.split(" '")[0], message.split(":")[0].removeprefix("Invalid ").strip()
        )
        if overrides.get(key) is not None:  # the command line's value, not the file's
            raise ConfigError(f"--{key.replace('_', '-')}: {error}") from error
        line = _line_of(text, key) if key in fields else None
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {error}") from error


def experiment_from(config: str | Path | None, **options: Any) -> Experiment:
    """The experiment of the file ``config`` with ``options`` winning, or of ``options`` alone (the
    command line's way: ``out`` defaults to ``runs/<name>``)."""
    if config is not None:
        return load_experiment_file(config, **options)
    options.setdefault("out", Path("runs") / options.get("name", "default"))
    return Experiment(**{**protocol_settings(options.get("protocol", "quick")), **options})
