"""The equal-budget protocol: tune every optimizer alike, rerun the best configuration over seeds.

For each task and optimizer:

1. **Tune** — ``trials`` Optuna trials with the same sampler (TPE, same seed and settings) and the
   same pruner (median, identical for all, or none) over the same shape of search space: ``lr``
   log-uniform over the optimizer's stated range plus its registered key knobs. A trial trains on
   seed 0 and scores its final *validation* metric; a diverged run scores the worst value.
2. **Rerun** — the best configuration on seeds 1..``seeds`` (never the tuning seed), recording
   full curves and diagnostics; these, scored on the *test* split, are what the report compares.

The budget is queued in the store and worked off trial by trial (:mod:`optarena.arena.workers`),
and everything lands in the store as it finishes: an interrupted comparison rerun with the same
arguments continues where it stopped, losing no completed trial and running none twice, and
several ``compare`` or ``optarena worker`` processes on one store share its budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from optarena.arena import records, store
from optarena.arena.runner import train
from optarena.arena.tasks import Task, TaskSettings, get_task
from optarena.arena.variants import OptimizerSpec, parse_variants, resolve
from optarena.optim import get_optimizer_info, list_optimizers
from optarena.validation import Real

DEFAULT_OPTIMIZERS = ("adamw", "sgdm", "adaburst", "adamnx", "adamw_agr", "adax", "adan", "lion", "lookahead_adamw")
ProgressCallback = Callable[[str], None]
SAMPLERS = ("tpe", "qmc")


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
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> variant table (arena.variants)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.data_dir = Path(self.data_dir) if self.data_dir is not None else None
        self.tensorboard = Path(self.tensorboard) if self.tensorboard is not None else None
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

    def spec(self, optimizer: str) -> OptimizerSpec:
        """What ``optimizer`` (a registered name or one of :attr:`variants`) trains."""
        return resolve(optimizer, self._specs)

    @property
    def storage_url(self) -> str:
        return self.storage or store.default_storage_url(self.out)

    def settings(self) -> TaskSettings:
        return TaskSettings(
            device=self.device, data_dir=self.data_dir, subset=self.subset, eval_subset=self.eval_subset
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


# --- the search space -----------------------------------------------------------------------------


def suggest(trial: optuna.Trial, optimizer: str | OptimizerSpec) -> dict[str, Any]:
    """Sample ``lr`` log-uniformly over the optimizer's range, then the knobs it leaves to tuning."""
    variant = optimizer if isinstance(optimizer, OptimizerSpec) else resolve(optimizer)
    low, high = get_optimizer_info(variant.optimizer).lr_range
    params: dict[str, Any] = {"lr": trial.suggest_float("lr", low, high, log=True)}
    for name, spec in variant.search_space().items():
        kind = spec[0]
        if kind == "log":
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=True)
        elif kind == "float":
            params[name] = trial.suggest_float(name, spec[1], spec[2])
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2])
        elif kind == "choice":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            raise ValueError(f"Invalid search space of {optimizer}: {name} has unknown kind {kind!r}")
    return params


def trial_seed(sampler_seed: int, trial_number: int) -> int:
    """The TPE seed of one trial: its random draws depend on the trial, not on which process runs it."""
    return int(np.random.SeedSequence([sampler_seed, trial_number]).generate_state(1)[0])


def make_sampler(experiment: Experiment, trials: int, trial_number: int | None = None) -> optuna.samplers.BaseSampler:
    """The same sampler, seed and settings for every optimizer.

    TPE is seeded per trial when ``trial_number`` is given (:func:`trial_seed`): one sampler seeded
    once would draw the same start-up configuration in every process, or in every trial of a
    process that builds its sampler afresh. QMC configurations are drawn up front, in order.
    """
    if experiment.sampler == "qmc":
        with warnings.catch_warnings():  # "experimental" since optuna 3.0; its behaviour is what we test
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=experiment.sampler_seed)
    seed = experiment.sampler_seed if trial_number is None else trial_seed(experiment.sampler_seed, trial_number)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(5, trials // 2)))


def repr_sampler(experiment: Experiment) -> str:
    if experiment.sampler == "qmc":
        return f"QMCSampler(qmc_type='sobol', scramble=True, seed={experiment.sampler_seed})"
    startup = max(1, min(5, experiment.trials // 2))
    return f"TPESampler(seed=trial_seed({experiment.sampler_seed}, trial number), n_startup_trials={startup})"


def repr_pruner(experiment: Experiment, epochs: int) -> str:
    if not experiment.prune:
        return "NopPruner()"
    return f"MedianPruner(n_startup_trials=3, n_warmup_steps={max(1, epochs // 3)})"


def make_pruner(experiment: Experiment, epochs: int) -> optuna.pruners.BasePruner:
    if not experiment.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 3))


# --- running -------------------------------------------------------------------------------------------


def _study(
    experiment: Experiment, task: Task, optimizer: str, phase: str, storage: Any = None, describe: bool = True
) -> optuna.Study:
    """The study of (task, optimizer, phase), created if missing; ``describe`` records the experiment in it."""
    epochs = experiment.epochs_for(task)
    study = optuna.create_study(
        study_name=store.study_name(experiment.name, task.name, optimizer, phase),
        storage=storage if storage is not None else store.open_storage(experiment.storage_url),
        sampler=make_sampler(experiment, experiment.trials),
        pruner=make_pruner(experiment, epochs) if phase == "tune" else optuna.pruners.NopPruner(),
        direction="maximize" if task.mode == "max" else "minimize",
        load_if_exists=True,
    )
    if describe and phase == "tune" and not records.is_described(study):
        config = records.StudyConfig(
            experiment=experiment.to_dict(),
            versions=store.versions(),
            task=records.TaskInfo(task.metric, task.mode, experiment.target_for(task), task.kind),
            sampler=repr_sampler(experiment),
            pruner=repr_pruner(experiment, epochs),
        )
        records.write_study_config(study, config)
    return study


def tune_objective(experiment: Experiment, task: Task, optimizer: str) -> Callable[[optuna.Trial], float]:
    """One tuning trial: train on seed 0, report the validation metric per epoch, score the last one."""
    epochs = experiment.epochs_for(task)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, experiment.spec(optimizer))

        def report(epoch: int, row: dict[str, float]) -> None:
            if epoch == 0:
                return
            value = row["val_metric"]
            trial.report(value if math.isfinite(value) else task.worst, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        variant, settings = experiment.spec(optimizer), experiment.settings()
        result = train(task, variant, params, seed=0, epochs=epochs, settings=settings, on_epoch=report)
        records.write_run(trial, result)
        return task.worst if result.diverged else result.records[-1]["val_metric"]

    return objective


def final_objective(
    experiment: Experiment, task: Task, optimizer: str, tune_study: optuna.Study, seed: int | None = None
) -> Callable[[optuna.Trial], float]:
    """One rerun of the tuned configuration on ``seed`` (or the trial's queued ``seed``), scored on test."""
    epochs = experiment.epochs_for(task)

    def objective(trial: optuna.Trial) -> float:
        params = best_params(tune_study)
        run_seed = seed if seed is not None else records.queued_seed(trial)
        records.write_rerun(trial, run_seed, params)
        logs = experiment.tensorboard
        log_dir = None if logs is None else logs / experiment.name / task.name / optimizer / f"seed{run_seed}"
        result = train(
            task,
            experiment.spec(optimizer),
            params,
            seed=run_seed,
            epochs=epochs,
            settings=experiment.settings(),
            diagnostics=True,
            tensorboard_dir=log_dir,
        )
        records.write_run(trial, result)
        return task.worst if result.diverged else result.records[-1]["test_metric"]

    return objective


def best_params(study: optuna.Study) -> dict[str, Any]:
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"Study {study.study_name} has no completed trial to take a best configuration from")
    return dict(study.best_trial.params)


def planned_runs(experiment: Experiment) -> int:
    return len(experiment.tasks) * len(experiment.optimizers) * (experiment.trials + experiment.seeds)


def completed_runs(experiment: Experiment) -> int:
    """Runs of ``experiment`` already in the store (for a resumed progress bar)."""
    results = records.load_results(experiment.storage_url, experiment.name)
    total = 0
    for (task, optimizer), pair in results.pairs.items():
        if task in experiment.tasks and optimizer in experiment.optimizers:
            total += min(len(pair.tune), experiment.trials) + min(len(pair.final), experiment.seeds)
    return total


def compare(
    experiment: Experiment,
    progress: ProgressCallback | None = None,
    *,
    prepare_only: bool = False,
    heartbeat_seconds: int = 10,
    grace_seconds: int = 60,
    poll_seconds: float = 2.0,
) -> None:
    """Tune and rerun every (task, optimizer) pair; results go to the store as they finish.

    The budget is first queued (:func:`optarena.arena.workers.prepare`) and then worked off like
    any ``optarena worker`` does (:func:`optarena.arena.workers.work`), so another ``compare`` or
    worker on the same store shares it; ``prepare_only`` stops after queueing, for workers to run.
    While a trial trains, a heartbeat is recorded every ``heartbeat_seconds``; another machine may
    give up a trial silent for ``grace_seconds`` (on this machine, only a trial whose process is
    gone). Raises ``ValueError`` if the store holds this experiment's name with settings that
    change its stored runs' meaning.
    """
    from optarena.arena import workers

    if heartbeat_seconds < 1 or grace_seconds <= heartbeat_seconds:
        raise ValueError(
            f"Invalid heartbeat/grace: {heartbeat_seconds}/{grace_seconds}; expected 1 <= heartbeat < grace"
        )
    experiment.out.mkdir(parents=True, exist_ok=True)
    if experiment.threads:
        torch.set_num_threads(experiment.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = store.open_storage(experiment.storage_url)
    workers.prepare(experiment, storage)
    if not prepare_only:
        workers.work(
            experiment,
            storage,
            progress,
            poll_seconds,
            heartbeat_seconds=heartbeat_seconds,
            grace_seconds=grace_seconds,
        )
