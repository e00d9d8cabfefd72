"""The search space, and the sampler and pruner that walk it: the same for every optimizer.

``lr`` is log-uniform over the optimizer's stated range, plus the knobs its registry entry declares
(less those a variant fixes). Every study uses the same sampler with the same seed and settings — TPE
seeded per trial, or a scrambled Sobol sequence drawn up front (``'qmc'``) — and the same median
pruner, or none.

The ``describe_*`` functions say what was used from a stored experiment configuration
(``Experiment.to_dict()``, as the store keeps it) with the same numbers the factories use, so a
report states them without building a sampler, and the two cannot drift apart.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from optarena.arena.spec.variants import OptimizerSpec, parse_variant, resolve

if TYPE_CHECKING:
    from optarena.arena.spec.experiment import Experiment

PRUNER_STARTUP_TRIALS = 3


def suggest(trial: optuna.Trial, optimizer: str | OptimizerSpec) -> dict[str, Any]:
    """Sample ``lr`` log-uniformly over the optimizer's range, then the knobs it leaves to tuning."""
    variant = optimizer if isinstance(optimizer, OptimizerSpec) else resolve(optimizer)
    low, high = variant.tuned_lr_range()
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


def tpe_startup_trials(trials: int) -> int:
    """TPE's random start-up trials for a budget of ``trials``."""
    return max(1, min(5, trials // 2))


def pruner_warmup_epochs(epochs: int) -> int:
    """Epochs the median pruner waits before it compares a trial (a third of the run)."""
    return max(1, epochs // 3)


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
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup_trials(trials))


def make_pruner(experiment: Experiment, epochs: int) -> optuna.pruners.BasePruner:
    if not experiment.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=pruner_warmup_epochs(epochs)
    )


def repr_sampler(experiment: Experiment) -> str:
    """The sampler as code, recorded in each tuning study for whoever reads the store."""
    if experiment.sampler == "qmc":
        return f"QMCSampler(qmc_type='sobol', scramble=True, seed={experiment.sampler_seed})"
    startup = tpe_startup_trials(experiment.trials)
    return f"TPESampler(seed=trial_seed({experiment.sampler_seed}, trial number), n_startup_trials={startup})"


def repr_pruner(experiment: Experiment, epochs: int) -> str:
    if not experiment.prune:
        return "NopPruner()"
    return f"MedianPruner(n_startup_trials={PRUNER_STARTUP_TRIALS}, n_warmup_steps={pruner_warmup_epochs(epochs)})"


# --- what a stored configuration used ------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerDescription:
    name: str  # optuna's class: 'TPESampler' or 'QMCSampler'
    seed: Any  # the experiment's sampler_seed
    startup_trials: int | None  # TPE's random start-up trials; None for QMC, which has no start-up phase


def describe_sampler(config: Mapping[str, Any]) -> SamplerDescription | None:
    """The sampler :func:`make_sampler` builds for a stored configuration; None when it does not say which."""
    try:
        kind, seed, trials = config["sampler"], config["sampler_seed"], int(config["trials"])
    except (KeyError, TypeError, ValueError):  # an older or a foreign store
        return None
    if kind == "qmc":
        return SamplerDescription("QMCSampler", seed, None)
    return SamplerDescription("TPESampler", seed, tpe_startup_trials(trials))


@dataclass(frozen=True)
class PrunerDescription:
    name: str  # optuna's class
    startup_trials: int
    warmup_epochs: int | None  # None: the run's epochs are not known


def describe_pruner(config: Mapping[str, Any], epochs: int | None) -> PrunerDescription | None:
    """The pruner :func:`make_pruner` builds for a stored configuration and ``epochs``; None: no pruning."""
    if not config.get("prune"):
        return None
    warmup = None if epochs is None else pruner_warmup_epochs(epochs)
    return PrunerDescription("MedianPruner", PRUNER_STARTUP_TRIALS, warmup)


@dataclass(frozen=True)
class SearchSpace:
    lr_range: tuple[float, float]  # log-uniform
    knobs: dict[str, tuple[Any, ...]]  # name -> (kind, ...) as the registry declares them
    fixed: str  # what a variant fixes, in words (:meth:`OptimizerSpec.describe`)


def describe_search_space(name: str, variants: Mapping[str, Any]) -> SearchSpace | None:
    """The search space of the optimizer or variant ``name`` (``variants``: the stored experiment's
    variant tables); None when this version of optarena does not know it."""
    try:
        variant = parse_variant(name, variants[name]) if name in variants else resolve(name)
    except ValueError:
        return None
    return SearchSpace(variant.tuned_lr_range(), variant.search_space(), variant.describe())
