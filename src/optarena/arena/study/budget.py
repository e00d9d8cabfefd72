"""The budget a (task, optimizer) pair spent, stated in its tuning study.

After every trial a process runs (and after a widening is queued), the pair's budget is recomputed from the
store and written as the tuning study's user attribute ``budget`` (read it with optuna as
``study.user_attrs["budget"]``, or as :attr:`optarena.arena.study.records.StudyConfig.budget`). Its fields:

* ``protocol``: the preset the experiment's settings came from (``'quick'``, ``'powered'``);
* ``trials``: tuning trials finished (completed or pruned), every widening round included;
* ``trials_planned``: tuning trials queued: ``trials`` of the experiment plus every widening round's;
* ``pruned``: of ``trials``, those the pruner stopped;
* ``tune_seeds``: the seeds each tuning trial trains on (:func:`~optarena.arena.spec.experiment.tune_seed_list`);
* ``seeds``: reruns of the best configuration completed (seeds 1..n);
* ``widenings``: widening rounds performed; ``widened``: the knobs whose range was widened, in order;
* ``runs``: training runs started and finished: every tuning seed a finished tuning trial trained on (a
  pruned trial counts its first seed only) plus the completed reruns;
* ``steps``: optimizer steps summed over those runs; ``epochs``: epochs summed over them (a pruned trial's
  and a diverged run's up to where they stopped);
* ``seconds``: wall time summed over the finished trials, start to finish, tuning and reruns
  (``tune_seconds``, ``rerun_seconds`` split it): what the budget cost on the machines that ran it.

A store written before the budget existed has no ``budget``: readers take it as unknown.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optarena.arena.spec.experiment import Experiment
from optarena.arena.study import records, widening

FIELDS = (
    "protocol", "trials", "trials_planned", "pruned", "tune_seeds", "seeds", "widenings", "widened", "runs",
    "steps", "epochs", "seconds", "tune_seconds", "rerun_seconds",
)  # fmt: skip


def _seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _tune_cost(trial: FrozenTrial) -> tuple[int, float, float]:
    """(runs, steps, epochs) one finished tuning trial trained."""
    runs = records.tune_runs_of(trial)
    if runs:  # every seed it trained on
        return len(runs), sum(float(r["step"]) for r in runs), sum(float(r["epoch"]) for r in runs)
    stopped = records.pruned_at(trial) or records.last_row(trial)  # pruned in its first seed, or an older store
    if stopped is None:
        return 1, 0.0, 0.0
    return 1, float(stopped["step"]), float(stopped["epoch"])


def compute(experiment: Experiment, tune: optuna.Study, final: optuna.Study) -> dict[str, Any]:
    """The budget of one pair from its two studies (:data:`FIELDS`, as the module says)."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    tuned = tune.get_trials(deepcopy=False, states=finished)
    reruns = final.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = widening.recorded(tune)
    runs = steps = epochs = 0.0
    for trial in tuned:
        n, s, e = _tune_cost(trial)
        runs, steps, epochs = runs + n, steps + s, epochs + e
    for trial in reruns:
        row = records.last_row(trial)
        runs += 1
        if row is not None:
            steps, epochs = steps + float(row["step"]), epochs + float(row["epoch"])
    tune_seconds = sum(_seconds(t) for t in tuned)
    rerun_seconds = sum(_seconds(t) for t in reruns)
    return {
        "protocol": experiment.protocol,
        "trials": len(tuned),
        "trials_planned": sum(widening.round_sizes(experiment, done).values()),
        "pruned": sum(t.state == TrialState.PRUNED for t in tuned),
        "tune_seeds": experiment.tune_seeds,
        "seeds": len(reruns),
        "widenings": len({w.round for w in done}),
        "widened": [w.knob for w in done],
        "runs": int(runs),
        "steps": int(steps),
        "epochs": int(epochs),
        "seconds": round(tune_seconds + rerun_seconds, 3),
        "tune_seconds": round(tune_seconds, 3),
        "rerun_seconds": round(rerun_seconds, 3),
    }


def update(experiment: Experiment, tune: optuna.Study, final: optuna.Study) -> dict[str, Any]:
    """Recompute the pair's budget and write it in the tuning study (call it under the store's lock)."""
    value = compute(experiment, tune, final)
    records.write_budget(tune, value)
    return value
