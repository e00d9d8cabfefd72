"""The tasks layer: what a problem is — data, model, loss and metric — registered by name.

Every module here that defines ``TASKS`` (a list of :class:`Task`) is registered. The first layer of
the arena: it imports nothing else of it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from optarena.arena.tasks.base import MissingDataError, Problem, Task, TaskSettings

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"Invalid task name: {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def list_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The task ``name``; a ``ValueError`` listing the valid names otherwise."""
    if name not in _TASKS:
        raise ValueError(f"Unknown task {name!r}; valid tasks: {', '.join(list_tasks())}")
    return _TASKS[name]


def _register_modules() -> None:
    for module_info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        module = importlib.import_module(f"optarena.arena.tasks.{module_info.name}")
        for task in getattr(module, "TASKS", ()):
            register_task(task)


_register_modules()

__all__ = ["MissingDataError", "Problem", "Task", "TaskSettings", "get_task", "list_tasks", "register_task"]
