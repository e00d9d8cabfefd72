"""What defines a comparison: the :class:`Experiment` (the CLI's options and an experiment file's keys).

An experiment is checked when it is made: every setting, task and optimizer (or declared variant)
is valid, or a ``ValueError`` names the one that is not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from optarena.arena.spec.variants import OptimizerSpec, parse_variants, resolve
from optarena.arena.tasks import Task, TaskSettings, get_task
from optarena.optim import list_optimizers
from optarena.validation import Real


def default_storage_url(out_dir: Path) -> str:
    """The SQLite store of an experiment whose output folder is ``out_dir``."""
    return f"sqlite:///{(Path(out_dir) / 'optarena.db').resolve()}"


DEFAULT_OPTIMIZERS = ("adamw", "sgdm", "adaburst", "adamnx", "adamw_agr", "adax", "adan", "lion", "lookahead_adamw")
SAMPLERS = ("tpe", "qmc")

#: The protocol presets: the settings each one gives an experiment that does not set them itself (an
#: experiment file's keys and the command line's options win over the preset). ``quick`` is every
#: setting's default; ``powered`` is the budget meant for evidence (issue 18): 16 tuning trials, each
#: scored on 2 tuning seeds, ranges widened up to twice when the best sits on an edge, 10 rerun seeds on
#: the full test sets.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "quick": {"trials": 8, "seeds": 3, "tune_seeds": 1, "max_widenings": 0},
    "powered": {"trials": 16, "seeds": 10, "tune_seeds": 2, "max_widenings": 2, "eval_subset": None},
}
#: Tuning seed k (k = 0 .. tune_seeds - 1) is 0 for k = 0 (the seed every tuning trial trained on before
#: tune_seeds existed) and TUNE_SEED_OFFSET + k after; reruns train on seeds 1..seeds, which must stay below it.
TUNE_SEED_OFFSET = 1_000_000


def tune_seed_list(tune_seeds: int) -> list[int]:
    """The seeds a tuning trial trains on: ``[0, 1000001, 1000002, ...]`` (``tune_seeds`` of them)."""
    return [0 if k == 0 else TUNE_SEED_OFFSET + k for k in range(tune_seeds)]


def protocol_settings(protocol: str) -> dict[str, Any]:
    """The settings the preset ``protocol`` gives (:data:`PROTOCOLS`); a ``ValueError`` names the valid ones."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Invalid protocol: {protocol!r}; expected one of {', '.join(map(repr, PROTOCOLS))}")
    return dict(PROTOCOLS[protocol])


@dataclass
class Experiment:
    """Everything that defines a comparison (the CLI's options and the TOML file's keys)."""

    name: str = "default"
    tasks: list[str] = field(default_factory=lambda: ["digits"])
    optimizers: list[str] = field(default_factory=lambda: list(DEFAULT_OPTIMIZERS))
    trials: int = 8
    seeds: int = 3
    epochs: int | None = None  # None: each task's default
    target: float | None = None  # None: each task's default
    out: Path = Path("runs/default")
    storage: str | None = None  # None: SQLite under ``out``
    device: str = "cpu"
    threads: int | None = 1  # one torch thread: small models run fastest so on a shared machine
    data_dir: Path | None = None
    subset: int | None = None
    eval_subset: int | None = None  # score at most this many examples of each split (CPU-scale studies)
    sampler_seed: int = 0
    sampler: str = "tpe"  # 'tpe' (adaptive) or 'qmc' (scrambled Sobol, every configuration fixed up front)
    prune: bool = True
    tensorboard: Path | None = None  # also log every rerun's curves to TensorBoard under this folder
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> variant table (spec.variants)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> its own options (Task.options)
    protocol: str = "quick"  # the preset the unset settings came from (PROTOCOLS); recorded, it decides nothing later
    tune_seeds: int = 1  # seeds each tuning trial trains on; it scores their mean validation metric
    max_widenings: int = 0  # times a range whose best value sits on an edge may be widened (0: never)
    widen_factor: float = 10.0  # a widening moves that edge out by this factor (log-scale knobs)
    tune_weight_decay: bool = False  # add weight_decay, log-uniform, to every optimizer's search space

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.data_dir = Path(self.data_dir) if self.data_dir is not None else None
        self.tensorboard = Path(self.tensorboard) if self.tensorboard is not None else None
        if isinstance(self.widen_factor, int) and not isinstance(self.widen_factor, bool):
            self.widen_factor = float(self.widen_factor)  # TOML's 10 and 10.0 are the same setting
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad setting; unknown tasks and optimizers list the valid ones."""
        if not self.name or "/" in self.name:
            raise ValueError(f"Invalid name: {self.name!r}; expected a non-empty name without '/'")
        for key in ("trials", "seeds"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {key}: {value!r}; expected an integer >= 1")
        for key in ("epochs", "threads", "subset", "eval_subset"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"Invalid {key}: {value!r}; expected an integer >= 1 (or unset)")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Invalid protocol: {self.protocol!r}; expected one of {', '.join(map(repr, PROTOCOLS))}")
        if isinstance(self.tune_seeds, bool) or not isinstance(self.tune_seeds, int) or not 1 <= self.tune_seeds <= 100:
            raise ValueError(f"Invalid tune_seeds: {self.tune_seeds!r}; expected an integer in [1, 100]")
        if self.seeds >= TUNE_SEED_OFFSET:
            raise ValueError(f"Invalid seeds: {self.seeds!r}; expected an integer in [1, {TUNE_SEED_OFFSET - 1}]")
        widenings = self.max_widenings
        if isinstance(widenings, bool) or not isinstance(widenings, int) or not 0 <= widenings <= 10:
            raise ValueError(f"Invalid max_widenings: {widenings!r}; expected an integer in [0, 10]")
        factor = self.widen_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 < factor <= 1e6:
            raise ValueError(f"Invalid widen_factor: {factor!r}; expected a number in (1, 1e6]")
        if not isinstance(self.tune_weight_decay, bool):
            raise ValueError(f"Invalid tune_weight_decay: {self.tune_weight_decay!r}; expected true or false")
        if self.target is not None:
            Real().check("target", self.target)  # a finite number: nan or inf would never be reached
        if self.sampler not in SAMPLERS:
            raise ValueError(f"Invalid sampler: {self.sampler!r}; expected one of {', '.join(map(repr, SAMPLERS))}")
        if not self.tasks:
            raise ValueError("Invalid tasks: expected at least one task")
        if not self.optimizers:
            raise ValueError("Invalid optimizers: expected at least one optimizer")
        for task in self.tasks:
            get_task(task)
        if not isinstance(self.task_options, dict):
            raise ValueError(f"Invalid task_options: {self.task_options!r}; expected a table (task -> its options)")
        for task, options in self.task_options.items():
            if task not in self.tasks:
                raise ValueError(f"Invalid task_options: {task!r} is not one of the tasks ({', '.join(self.tasks)})")
            if not isinstance(options, dict):
                raise ValueError(f"Invalid task_options: {task} = {options!r}; expected a table of options")
            get_task(task).parse_options(options)
        self._specs = parse_variants(self.variants)
        for name in self.optimizers:
            if name not in list_optimizers() and name not in self._specs:
                valid = [*list_optimizers(), *self._specs]
                raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(valid)}")
        if len(set(self.optimizers)) != len(self.optimizers) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError("Invalid tasks/optimizers: each may be listed once")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ValueError(f"Invalid device: {self.device!r}; expected 'cpu' or 'cuda[:N]'")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"Invalid device: {self.device!r}; CUDA is not available on this machine")

    def widen_trials(self) -> int:
        """Tuning trials added by each widening of a range: half the budget, at least one."""
        return max(1, self.trials // 2)

    def spec(self, optimizer: str) -> OptimizerSpec:
        """What ``optimizer`` (a registered name or one of :attr:`variants`) trains."""
        return resolve(optimizer, self._specs)

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage_url(self.out)

    def settings(self, task: str | None = None) -> TaskSettings:
        """How to build ``task``'s problems (its ``task_options`` included; None: the settings every task shares)."""
        return TaskSettings(
            device=self.device,
            data_dir=self.data_dir,
            subset=self.subset,
            eval_subset=self.eval_subset,
            options=dict(self.task_options.get(task, {})) if task is not None else {},
        )

    def epochs_for(self, task: Task) -> int:
        return self.epochs or task.epochs

    def target_for(self, task: Task) -> float:
        return task.target if self.target is None else self.target

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out"] = str(self.out)
        out["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        out["tensorboard"] = None if self.tensorboard is None else str(self.tensorboard)
        return out
