"""The search space, and the sampler and pruner that walk it: the same for every optimizer.

``lr`` is log-uniform over the optimizer's stated range, plus the knobs its registry entry declares
(less those a variant fixes), plus, with ``tune_weight_decay``, ``weight_decay`` log-uniform over the range of
its kind of decay (:data:`WEIGHT_DECAY_RANGES`, :func:`weight_decay_kind`): one range for every decoupled,
lr-scaled decay (AdamW's ``θ ← θ(1 − lr·λ)``), another for coupled L2 decay (``g ← g + λθ``, SGD's), whose
customary values are about 100× smaller because it is tuned beside learning rates about 100× larger.

Every study uses the same sampler with the same seed and settings — TPE seeded per trial, or a scrambled
Sobol sequence drawn up front (``'qmc'``) — and the same median pruner, or none.

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
from optarena.optim import get_optimizer_info

if TYPE_CHECKING:
    from optarena.arena.spec.experiment import Experiment

PRUNER_STARTUP_TRIALS = 3


#: weight_decay's range (log-uniform) by the kind of decay. Decoupled, lr-scaled decay shrinks the weights by
#: lr·λ per step: 1e-4..1 holds AdamW's default 1e-2 at its centre, Lion's and Sophia's 0.1-1 and Adan's 0.02.
#: Coupled L2 decay is added to the gradient; SGD's customary 1e-4..5e-4 (with lr ~0.1) sits at the centre of
#: 1e-6..1e-2, and adaptive optimizers with coupled decay (Adam's L2, AdaX, AdaBound, SWATS) get the same
#: range, since their papers tune it on that scale (5e-4 for CIFAR). Unscaled decay (θ ← θ(1 − λ), no lr)
#: shrinks by λ itself: the decoupled range times a typical adaptive lr, 1e-3.
WEIGHT_DECAY_RANGES: dict[str, tuple[float, float]] = {
    "decoupled": (1e-4, 1.0),
    "coupled": (1e-6, 1e-2),
    "unscaled": (1e-7, 1e-3),
}
# Optimizers whose weight_decay has one fixed kind and no option that chooses it (the others say it by a flag).
_DECOUPLED = {"adamw", "adamw_agr", "lookahead_adamw", "adamnx", "adan", "adan_agr", "lion", "sophiag"}
_DECOUPLED |= {"adafactor", "muon"}  # torch's Adafactor and Muon: θ ← θ(1 − lr·λ)
_COUPLED = {"sgdm", "lookahead_sgdm", "adagrad", "rmsprop"}
_MODES = {"decoupled": "decoupled", "update": "decoupled", "l2": "coupled", "unscaled": "unscaled"}


def weight_decay_kind(optimizer: str | OptimizerSpec) -> str | None:
    """``'decoupled'``, ``'coupled'`` or ``'unscaled'``: how the optimizer (with a variant's fixed options)
    applies ``weight_decay``; None when it has no ``weight_decay`` hyperparameter."""
    spec = optimizer if isinstance(optimizer, OptimizerSpec) else resolve(optimizer)
    settings = {**get_optimizer_info(spec.optimizer).hyperparameter_defaults(), **spec.options}
    if "weight_decay" not in settings:
        return None
    if "weight_decay_mode" in settings:  # LAMB's 'update' adds λθ to the update before lr·trust: lr-scaled
        return _MODES[settings["weight_decay_mode"]]
    for flag in ("decoupled_weight_decay", "decoupled"):  # torch's Adam family; AdaX / AdaXW
        if flag in settings:
            return "decoupled" if settings[flag] else "coupled"
    if "weight_decouple" in settings:  # AdaBelief, ACProp
        if not settings["weight_decouple"]:
            return "coupled"
        return "unscaled" if settings.get("fixed_decay") else "decoupled"
    if spec.optimizer in _DECOUPLED:
        return "decoupled"
    if spec.optimizer in _COUPLED:
        return "coupled"
    raise ValueError(
        f"Invalid tune_weight_decay: the weight decay of {spec.optimizer!r} is not classified as decoupled or coupled "
        "(optarena.arena.spec.search.weight_decay_kind); fix its weight_decay in a variant, or classify it"
    )


def search_space(optimizer: str | OptimizerSpec, tune_weight_decay: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every tuned knob, ``lr`` first: name -> ``('log', low, high)``, ``('float', ...)``, ``('int', ...)`` or
    ``('choice', options)``. ``weight_decay`` is added when asked, unless a variant fixes it."""
    variant = optimizer if isinstance(optimizer, OptimizerSpec) else resolve(optimizer)
    space: dict[str, tuple[Any, ...]] = {"lr": ("log", *variant.tuned_lr_range())}
    space.update(variant.search_space())
    if tune_weight_decay and "weight_decay" not in variant.options and "weight_decay" not in space:
        kind = weight_decay_kind(variant)
        if kind is not None:
            space["weight_decay"] = ("log", *WEIGHT_DECAY_RANGES[kind])
    return space


def suggest(
    trial: optuna.Trial, optimizer: str | OptimizerSpec, space: Mapping[str, tuple[Any, ...]] | None = None
) -> dict[str, Any]:
    """Sample every knob of ``space`` (default: :func:`search_space` of the optimizer): ``lr`` log-uniformly over
    the optimizer's range, then the knobs it leaves to tuning."""
    space = search_space(optimizer) if space is None else space
    params: dict[str, Any] = {}
    for name, spec in space.items():
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


def describe_search_space(
    name: str, variants: Mapping[str, Any], tune_weight_decay: bool = False
) -> SearchSpace | None:
    """The search space of the optimizer or variant ``name`` (``variants``: the stored experiment's
    variant tables; ``tune_weight_decay``: the stored setting, which adds ``weight_decay`` to the knobs); None
    when this version of optarena does not know it. Ranges widened during tuning are the tuning study's
    ``widenings`` (:attr:`optarena.arena.study.records.StudyConfig.widenings`)."""
    try:
        variant = parse_variant(name, variants[name]) if name in variants else resolve(name)
    except ValueError:
        return None
    knobs = {k: v for k, v in search_space(variant, tune_weight_decay).items() if k != "lr"}
    return SearchSpace(variant.tuned_lr_range(), knobs, variant.describe())
