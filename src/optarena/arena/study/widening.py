"""Widening a tuning study's ranges in the store: the rounds of extra trials, queued like the rest of the budget.

When every queued tuning trial of a (task, optimizer) pair has finished, :func:`extend` applies the rule of
:mod:`optarena.arena.spec.widening` to the best configuration so far: if a log-scale knob sits on an edge and
the experiment allows another widening (``max_widenings``), it records the widening in the tuning study
(``widenings``) and queues :meth:`~optarena.arena.spec.experiment.Experiment.widen_trials` more tuning
trials for the new round, each marked with its ``round`` and slot. The record is written before the trials
are queued, and :func:`queue_rounds` queues whatever slot of a recorded round is missing, so a process killed
between the two leaves nothing lost: the next ``compare``, ``--prepare`` or worker queues the rest. The
pair's reruns wait until no widening is due. Everything runs under the store's lock (the caller's).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from optarena.arena.spec.experiment import Experiment
from optarena.arena.spec.search import make_sampler, search_space, suggest
from optarena.arena.spec.widening import Space, Widening, widened_space, widenings_for
from optarena.arena.study import records


def recorded(study: optuna.Study) -> list[Widening]:
    """The widenings recorded in the tuning ``study``, oldest first."""
    return [Widening.from_dict(entry) for entry in records.widenings_of(study)]


def space_of(experiment: Experiment, optimizer: str, widenings: list[Widening], round: int) -> Space:
    """The search space of ``optimizer`` in widening ``round`` (0: the original)."""
    base = search_space(experiment.spec(optimizer), experiment.tune_weight_decay)
    return widened_space(base, widenings, round)


def round_sizes(experiment: Experiment, widenings: list[Widening]) -> dict[int, int]:
    """Round -> the tuning slots it holds: ``trials`` for round 0, each widening round its extra trials."""
    sizes = {0: experiment.trials}
    for widening in widenings:
        sizes[widening.round] = widening.extra_trials
    return sizes


def qmc_configurations(experiment: Experiment, space: Space, count: int, skip: int = 0) -> list[dict[str, Any]]:
    """Configurations ``skip`` to ``skip + count`` of the scrambled Sobol sequence over ``space`` (the
    experiment's sampler seed): a widened round continues the sequence, so its points are new ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # optuna warns that a QMC sample count is not a power of 2
        study = optuna.create_study(sampler=make_sampler(experiment, experiment.trials))
        configurations = []
        for _ in range(skip + count):
            trial = study.ask()
            configurations.append(suggest(trial, "adamw", space))  # the optimizer is not used: space is given
            study.tell(trial, 0.0)  # a told trial fixes the search space, as in a sequential run
    return configurations[skip:]


def queue_rounds(experiment: Experiment, optimizer: str, study: optuna.Study) -> int:
    """Queue every missing slot of every round (the original budget and each recorded widening); returns how
    many were queued. Trials stored before slots existed fill round 0's slots one each."""
    widenings = recorded(study)
    kept = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL]
    unslotted = sum(records.slot_of(t) is None for t in kept)
    queued = 0
    offset = 0  # slots of the rounds before: where a widened round's Sobol points continue the sequence
    for round, size in sorted(round_sizes(experiment, widenings).items()):
        taken = {records.slot_of(t) for t in kept if records.round_of(t) == round} - {None}
        missing = [slot for slot in range(size) if slot not in taken]
        if round == 0:
            missing = missing[unslotted:]
        if missing:
            configurations = None
            if experiment.sampler == "qmc":
                space = space_of(experiment, optimizer, widenings, round)
                configurations = qmc_configurations(experiment, space, size, offset)
            for slot in missing:
                records.enqueue_tune(study, slot, configurations[slot] if configurations else {}, round)
                queued += 1
        offset += size
    if queued and widenings:
        _note_trials(study, widenings)
    return queued


def _note_trials(study: optuna.Study, widenings: list[Widening]) -> None:
    """Record in each widening the numbers of the trials its round holds (a retried trial's copy included)."""
    by_round: dict[int, list[int]] = {}
    for trial in study.get_trials(deepcopy=False):
        by_round.setdefault(records.round_of(trial), []).append(trial.number)
    entries = []
    for widening in widenings:
        entries.append({**widening.to_dict(), "trials": sorted(by_round.get(widening.round, []))})
    records.write_widenings(study, entries)


def extend(experiment: Experiment, optimizer: str, study: optuna.Study) -> int:
    """With every queued tuning trial of ``study`` finished: queue what a recorded round still misses, or widen
    the ranges whose best value sits on an edge (if rounds are left); returns the trials queued (0: tuning is
    done, the reruns may start)."""
    queued = queue_rounds(experiment, optimizer, study)
    if queued:
        return queued
    widenings = recorded(study)
    round = max((w.round for w in widenings), default=0)
    if round >= experiment.max_widenings:
        return 0
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return 0  # nothing to take a best configuration from (every trial pruned or failed)
    best = study.best_trial
    new = widenings_for(
        space_of(experiment, optimizer, widenings, round),
        best.params,
        factor=experiment.widen_factor,
        optimizer=experiment.spec(optimizer).optimizer,
        round=round + 1,
        best_trial=best.number,
        extra_trials=experiment.widen_trials(),
    )
    if not new:
        return 0
    records.write_widenings(study, [*records.widenings_of(study), *(w.to_dict() for w in new)])
    return queue_rounds(experiment, optimizer, study)
