"""Checks made before any training starts: the outputs can be written, the data are there, the settings build.

A comparison can run for hours; a mistake found at its end — an output folder that cannot be
written, a dataset that is missing, a hyperparameter of the wrong type — costs all of it, and one
found by the first trial leaves a failed trial in the store and an Optuna traceback in the output.
The CLI calls these first (and :func:`optarena.arena.study.protocol.check_experiment` for a whole
comparison), and each raises one :class:`PreflightError` (a ``ValueError``) naming the
option or file, the path and the reason. They write nothing: a folder that does not exist yet is
checked by creating (and at once removing) a probe file in its nearest existing parent.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from optarena.arena.tasks import TaskSettings, get_task


class PreflightError(ValueError):
    """A setting that would make a run fail: the message names the option, the path or key, and why."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def check_writable_dir(path: str | Path, option: str) -> None:
    """``path`` is, or can be made, a folder this process can write files into."""
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "it" if existing == path else str(existing)
        raise PreflightError(f"Invalid {option}: cannot write to {path}: {where} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".optarena-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        where = "it" if existing == path else str(existing)
        raise PreflightError(
            f"Invalid {option}: cannot write to {path}: {where} takes no new files ({_reason(error)})"
        ) from None


def check_writable_file(path: str | Path, option: str) -> None:
    """``path`` is, or can be made, a file this process can write."""
    path = Path(path)
    if path.is_dir():
        raise PreflightError(f"Invalid {option}: cannot write to {path}: it is a folder, not a file")
    check_writable_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise PreflightError(f"Invalid {option}: cannot write to {path}: Permission denied")


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (``None`` for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    location = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if location in ("", ":memory:") else Path(location)


def check_store_location(url: str, option: str) -> None:
    """A SQLite store's folder can be written (the store itself is opened, and checked, by the store module)."""
    path = sqlite_path(url)
    if path is not None:
        if path.is_dir():
            raise PreflightError(f"Invalid {option}: the SQLite store {path} is a folder, not a file")
        check_writable_dir(path.parent, option)


def check_data_dir(path: str | Path | None, option: str = "--data-dir") -> None:
    """A data folder that was given exists (a typo would otherwise read as 'dataset missing', or be ignored)."""
    if path is not None and not Path(path).expanduser().exists():
        raise PreflightError(f"Invalid {option}: {path} does not exist")


def check_data(tasks: Iterable[str], settings: TaskSettings) -> None:
    """Every task's data can be found (nothing is decoded and no model is built): the error ``build`` would raise."""
    for name in tasks:
        get_task(name).check_data(settings)


def check_device(device: str, option: str) -> None:
    """``device`` is ``cpu``, ``cuda`` or ``cuda:N``, and CUDA is there if asked for."""
    import torch

    if not (device == "cpu" or device == "cuda" or re.fullmatch(r"cuda:\d+", device)):
        raise ValueError(f"Invalid {option}: {device!r}; expected 'cpu' or 'cuda[:N]'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Invalid {option}: {device!r}; CUDA is not available on this machine")


def check_tensorboard(path: str | Path | None, option: str = "--tensorboard") -> None:
    """TensorBoard logging can happen: the package imports and the folder can be written."""
    if path is None:
        return
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as error:
        raise PreflightError(
            f"Invalid {option}: TensorBoard logging needs the tensorboard package: pip install tensorboard ({error})"
        ) from None
    check_writable_dir(path, option)


def check_optimizer(
    optimizer: str,
    options: Mapping[str, Any],
    *,
    label: str,
    device: str = "cpu",
    spec: Any = None,
) -> None:
    """The registered ``optimizer`` builds with ``options`` and takes a step, on a two-by-two dummy layer.

    A wrong name, type or value among ``options`` (from ``--set``, ``--lr`` or a variant's table) would
    otherwise fail as a ``TypeError`` in the first trial. ``spec`` (an :class:`OptimizerSpec`) also builds
    and steps its schedule. The error names ``label`` and gives the optimizer's own message; a failure
    without any ``options`` is not the user's and propagates as it is.
    """
    import torch
    from torch import nn

    from optarena.optim import create_optimizer, get_optimizer_info
    from optarena.optim.hooks import LoopContext

    # What the training loop supplies (e.g. Adaburst's total_steps), for the dummy run's 100 steps.
    supplied = get_optimizer_info(optimizer).hooks.options(LoopContext(steps_per_epoch=10, total_steps=100))

    def attempt(kwargs: Mapping[str, Any]) -> None:
        model = nn.Linear(2, 2).to(device)
        built = create_optimizer(model, optimizer, **{**supplied, **kwargs})
        schedule = spec.build_schedule(built, 100, 10) if spec is not None else None
        if kwargs.get("compile"):
            return  # a compiled step would compile here: building is the check
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        built.step()
        if schedule is not None:
            schedule.step()

    attempt({})  # the defaults: any error here is a bug, shown as one
    try:
        attempt(options)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        raise PreflightError(f"Invalid {label}: {optimizer} does not accept it ({reason})") from None


__all__ = [
    "PreflightError",
    "check_data",
    "check_data_dir",
    "check_device",
    "check_optimizer",
    "check_store_location",
    "check_tensorboard",
    "check_writable_dir",
    "check_writable_file",
    "sqlite_path",
]
