"""The results layer: what the store holds about every run, as typed records, written and read here alone.

The protocol and the workers write through this module (:func:`write_run`, :func:`write_rerun`,
:func:`write_study_config`, the queue's :func:`enqueue_tune` and :func:`enqueue_rerun`, a trial's
owner); the report and the evidence page read :class:`ExperimentResults` (:func:`load_results`) and
never see an Optuna trial. Only this module knows the attribute keys. They are the keys optarena has
always written, so every existing store (``experiments/evidence/stores/*.db``) reads as it did:

* a trial's user attributes: its run — ``records`` (the per-epoch rows), ``diverged``,
  ``diverged_reason``, ``threads``, ``load_average``, ``device``, ``trajectory``,
  ``update_magnitudes``, ``samples`` and ``generation`` (a generative task's sample grids by epoch, and how
  they were made) and ``<event>_events`` (Adaburst's ``burst_events``) —, a tuning trial's
  queue ``slot`` and, for a trial of a widened range, its widening ``round`` (absent: 0), its ``tune_runs``
  (one entry per tuning seed: ``seed``, ``value``, ``diverged``, ``step``, ``epoch``, ``seconds``; the first
  seed's run is the trial's run), ``pruned_at`` (a pruned trial's ``step`` and ``epoch``), a rerun's ``seed``
  and the configuration it trained with (``param_<name>``);
* a tuning study's user attributes: ``config`` (the experiment), ``versions``, ``target``, ``mode``,
  ``metric``, ``kind``, ``sampler`` and ``pruner``; ``widenings`` (every range widened, see
  :class:`optarena.arena.spec.widening.Widening`, with ``trials``: the numbers of the trials queued for its
  round) and ``budget`` (what the pair cost, see :mod:`optarena.arena.study.budget`);
* a running trial's system attribute ``optarena_owner`` (the process that runs it) and, on a queued
  copy of a failed trial, Optuna's retry marks ``failed_trial`` and ``retry_history``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from optarena.arena.run.runner import RunResult
from optarena.arena.study import store

EVENTS_SUFFIX = "_events"  # event 'burst' -> user attribute 'burst_events'
PARAM_PREFIX = "param_"  # a rerun's configuration, one attribute per hyperparameter
SLOT, SEED, ROUND = "slot", "seed", "round"
TUNE_RUNS, PRUNED_AT = "tune_runs", "pruned_at"  # a tuning trial's per-seed runs; where a pruned trial stopped
WIDENINGS, BUDGET = "widenings", "budget"  # tuning study: the ranges widened; the pair's budget
CONFIG = "config"  # the tuning study's attribute that says the study was described
OWNER = "optarena_owner"  # system attribute of a RUNNING trial: the process that runs it
FAILED_TRIAL, RETRY_HISTORY = "failed_trial", "retry_history"  # as optuna's RetryFailedTrialCallback marks a copy


# --- the records --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One training run as stored: its curves and what was measured beside them."""

    rows: list[dict[str, float]]  # one per evaluation (epoch 0 = before training): step, wall_time, metrics
    diverged: bool = False
    diverged_reason: str = ""
    events: dict[str, list[int]] = field(default_factory=dict)  # event name ('burst') -> the steps it followed
    trajectory: list[list[float]] = field(default_factory=list)  # function tasks: the point after each step
    update_magnitudes: dict[str, list[float]] = field(default_factory=dict)  # layer -> mean |Δθ| per epoch
    # layer type -> AGR's relative change ‖AGR(g) − g‖/‖g‖ per epoch (RunResult.agr_change; empty in older stores)
    agr_change: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[int, str] = field(default_factory=dict)  # generative tasks: epoch -> base64 PNG grid of samples
    generation: dict[str, Any] = field(default_factory=dict)  # how they were made and scored (FID features, ...)
    threads: int | None = None  # None: not recorded (an older store)
    load_average: list[float] = field(default_factory=list)
    device: str | None = None


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial: a tuning trial (phase ``'tune'``) or a seeded rerun (``'final'``)."""

    phase: Literal["tune", "final"]
    number: int
    state: Literal["complete", "pruned"]
    params: dict[str, Any]  # the configuration it trained with (a rerun: the tuned one)
    value: float | None  # validation (tune) or test (final) metric; None when pruned
    intermediate_values: dict[int, float]  # the validation metric reported after each epoch
    slot: int | None  # a tuning trial's place in the queue (None: run before the queue existed)
    seed: int | None  # a rerun's seed
    seconds: float | None  # from start to finish
    run: RunRecord | None  # None: no run was stored (a pruned trial stops inside its run)


@dataclass(frozen=True)
class TaskInfo:
    """The task a study ran, as its tuning study recorded it (the defaults read a store that does not say)."""

    metric: str = "metric"
    mode: str = "max"
    target: float | None = None
    kind: str = "classification"


@dataclass(frozen=True)
class StudyConfig:
    """What a tuning study records when it is created: the experiment, the software and the task."""

    experiment: dict[str, Any]  # the experiment's settings (``Experiment.to_dict()``); {} if not recorded
    versions: dict[str, str]
    task: TaskInfo
    sampler: str | None = None  # how the sampler and the pruner were built, in words
    pruner: str | None = None
    widenings: list[dict[str, Any]] = field(default_factory=list)  # the ranges widened (spec.widening.Widening)
    budget: dict[str, Any] | None = None  # what the pair cost (study.budget); None: an older store


@dataclass(frozen=True)
class PairResults:
    """One optimizer on one task: its finished tuning trials, its completed reruns and its study's configuration."""

    task: str
    optimizer: str
    tune: list[TrialRecord] = field(default_factory=list)  # complete or pruned, by trial number
    final: list[TrialRecord] = field(default_factory=list)  # complete, by trial number
    config: StudyConfig | None = None  # None: the tuning study records nothing


@dataclass(frozen=True)
class ExperimentResults:
    """Every (task, optimizer) pair of one experiment in a store, in the store's order."""

    name: str
    pairs: dict[tuple[str, str], PairResults]

    def select(self, task: str, optimizers: list[str]) -> ExperimentResults:
        """Only ``task`` and ``optimizers``."""
        kept = {(t, o): pair for (t, o), pair in self.pairs.items() if t == task and o in optimizers}
        return ExperimentResults(self.name, kept)


# --- writing ---------------------------------------------------------------------------------------------------


def write_run(trial: optuna.Trial, run: RunResult) -> None:
    """Store what ``run`` recorded in ``trial``."""
    trial.set_user_attr("records", run.records)
    trial.set_user_attr("diverged", run.diverged)
    if run.diverged_reason:
        trial.set_user_attr("diverged_reason", run.diverged_reason)
    trial.set_user_attr("threads", run.threads)
    trial.set_user_attr("load_average", run.load_average)
    trial.set_user_attr("device", run.device)
    for event, steps in run.events.items():
        trial.set_user_attr(event + EVENTS_SUFFIX, steps)
    if run.trajectory:
        trial.set_user_attr("trajectory", run.trajectory)
    if run.update_magnitudes:
        trial.set_user_attr("update_magnitudes", run.update_magnitudes)
    if run.agr_change:
        trial.set_user_attr("agr_change", run.agr_change)
    if run.samples:
        trial.set_user_attr("samples", {str(epoch): grid for epoch, grid in run.samples.items()})  # JSON keys
    if run.generation:
        trial.set_user_attr("generation", run.generation)


def write_rerun(trial: optuna.Trial, seed: int, params: dict[str, Any]) -> None:
    """Record the seed and the (tuned) configuration a rerun trains with."""
    trial.set_user_attr(SEED, seed)
    for name, value in params.items():
        trial.set_user_attr(PARAM_PREFIX + name, value)


def queued_seed(trial: optuna.Trial) -> int:
    """The seed a queued rerun was given (:func:`enqueue_rerun`)."""
    return int(trial.user_attrs[SEED])


def is_described(study: optuna.Study) -> bool:
    return CONFIG in study.user_attrs


def write_study_config(study: optuna.Study, config: StudyConfig) -> None:
    """Record ``config`` in the tuning ``study`` (once: call it when :func:`is_described` is False)."""
    study.set_user_attr(CONFIG, config.experiment)
    study.set_user_attr("versions", config.versions)
    study.set_user_attr("target", config.task.target)
    study.set_user_attr("mode", config.task.mode)
    study.set_user_attr("metric", config.task.metric)
    study.set_user_attr("kind", config.task.kind)
    study.set_user_attr("sampler", config.sampler)
    study.set_user_attr("pruner", config.pruner)


# --- the queue and who runs what -----------------------------------------------------------------------------


def enqueue_tune(study: optuna.Study, slot: int, params: dict[str, Any], round: int = 0) -> None:
    """Queue the tuning trial of ``slot`` of widening ``round`` (``params``: its configuration if drawn up
    front, else {})."""
    study.enqueue_trial(params, user_attrs={SLOT: slot, **({ROUND: round} if round else {})})


def round_of(trial: FrozenTrial | optuna.Trial) -> int:
    """The widening round a tuning trial searches (0: the original ranges)."""
    value = trial.user_attrs.get(ROUND, 0)
    return value if isinstance(value, int) else 0


def widenings_of(study: optuna.Study | optuna.study.StudySummary) -> list[dict[str, Any]]:
    """The ranges widened in a tuning study, oldest first (:func:`write_widenings`)."""
    return list(study.user_attrs.get(WIDENINGS) or [])


def write_widenings(study: optuna.Study, widenings: list[dict[str, Any]]) -> None:
    study.set_user_attr(WIDENINGS, widenings)


def write_budget(study: optuna.Study, budget: dict[str, Any]) -> None:
    study.set_user_attr(BUDGET, budget)


def write_tune_runs(trial: optuna.Trial, runs: list[dict[str, Any]]) -> None:
    """A tuning trial's run on each tuning seed: ``seed``, ``value``, ``diverged``, ``step``, ``epoch``, ``seconds``."""
    trial.set_user_attr(TUNE_RUNS, runs)


def write_pruned_at(trial: optuna.Trial, step: float, epoch: float) -> None:
    trial.set_user_attr(PRUNED_AT, {"step": step, "epoch": epoch})


def tune_runs_of(trial: FrozenTrial) -> list[dict[str, Any]]:
    return list(trial.user_attrs.get(TUNE_RUNS) or [])


def pruned_at(trial: FrozenTrial) -> dict[str, Any] | None:
    return trial.user_attrs.get(PRUNED_AT)


def last_row(trial: FrozenTrial) -> dict[str, Any] | None:
    """The last evaluation row a trial stored (None: it stored no run)."""
    rows = trial.user_attrs.get("records") or []
    return rows[-1] if rows else None


def enqueue_rerun(study: optuna.Study, seed: int) -> None:
    study.enqueue_trial({}, user_attrs={SEED: seed})


def slot_of(trial: FrozenTrial) -> int | None:
    return trial.user_attrs.get(SLOT)


def seed_of(trial: FrozenTrial) -> int | None:
    return trial.user_attrs.get(SEED)


def owner_of(trial: FrozenTrial) -> Any:
    """What the process running ``trial`` recorded about itself (None if nothing)."""
    return trial.system_attrs.get(OWNER)


def set_owner(storage: Any, trial_id: int, owner: dict[str, Any]) -> None:
    storage.set_trial_system_attr(trial_id, OWNER, owner)


def retry_attrs(failed: FrozenTrial) -> tuple[dict[str, Any], int]:
    """The system attributes of a queued copy of ``failed`` (no owner, marked as a retry), and its retry count."""
    attrs = {key: value for key, value in failed.system_attrs.items() if key != OWNER}
    history = [*attrs.get(RETRY_HISTORY, []), failed.number]
    return {FAILED_TRIAL: failed.number, **attrs, RETRY_HISTORY: history}, len(history)


# --- reading --------------------------------------------------------------------------------------------------


def _tune_summaries(storage: Any, experiment: str) -> Iterator[tuple[str, str, optuna.study.StudySummary]]:
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        parsed = store.parse_study_name(summary.study_name)
        if parsed is not None and parsed[0] == experiment and parsed[3] == "tune":
            yield parsed[1], parsed[2], summary


def stored_experiment_configs(storage: Any, experiment: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, optimizer) -> the experiment's settings its tuning study was created with."""
    configs = {}
    for task, optimizer, summary in _tune_summaries(storage, experiment):
        stored = summary.user_attrs.get(CONFIG)
        if isinstance(stored, dict):
            configs[task, optimizer] = stored
    return configs


def newest_experiment_config(storage: Any, experiment: str) -> dict[str, Any] | None:
    """The experiment's settings as its newest tuning study recorded them (a grown experiment's whole list)."""
    described = [s for _, _, s in _tune_summaries(storage, experiment) if CONFIG in s.user_attrs]
    if not described:
        return None
    return max(described, key=lambda s: s._study_id).user_attrs[CONFIG]  # ids grow with creation


def _run(attrs: dict[str, Any]) -> RunRecord | None:
    if "records" not in attrs:
        return None
    events = {
        key.removesuffix(EVENTS_SUFFIX): list(value)
        for key, value in attrs.items()
        if key.endswith(EVENTS_SUFFIX) and value
    }
    return RunRecord(
        rows=list(attrs["records"] or []),
        diverged=bool(attrs.get("diverged")),
        diverged_reason=attrs.get("diverged_reason") or "",
        events=events,
        trajectory=attrs.get("trajectory") or [],
        update_magnitudes=attrs.get("update_magnitudes") or {},
        agr_change=attrs.get("agr_change") or {},
        samples={int(epoch): grid for epoch, grid in (attrs.get("samples") or {}).items()},
        generation=attrs.get("generation") or {},
        threads=attrs.get("threads"),
        load_average=attrs.get("load_average") or [],
        device=attrs.get("device"),
    )


def _trial(phase: Literal["tune", "final"], trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    if phase == "tune":
        params = dict(trial.params)
    else:
        params = {k.removeprefix(PARAM_PREFIX): v for k, v in attrs.items() if k.startswith(PARAM_PREFIX)}
    seconds = None
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    seed, slot = attrs.get(SEED), attrs.get(SLOT)
    return TrialRecord(
        phase=phase,
        number=trial.number,
        state="pruned" if trial.state == TrialState.PRUNED else "complete",
        params=params,
        value=trial.value,
        intermediate_values=dict(trial.intermediate_values),
        slot=slot if isinstance(slot, int) else None,
        seed=seed if isinstance(seed, int) else None,
        seconds=seconds,
        run=_run(attrs),
    )


def _study_config(attrs: dict[str, Any]) -> StudyConfig | None:
    if not attrs:
        return None
    target = attrs.get("target")
    task = TaskInfo(
        metric=attrs.get("metric", TaskInfo.metric),
        mode=attrs.get("mode", TaskInfo.mode),
        target=float(target) if target is not None else None,
        kind=attrs.get("kind", TaskInfo.kind),
    )
    return StudyConfig(
        experiment=attrs.get(CONFIG) or {},
        versions=attrs.get("versions") or {},
        task=task,
        sampler=attrs.get("sampler"),
        pruner=attrs.get("pruner"),
        widenings=list(attrs.get(WIDENINGS) or []),
        budget=attrs.get(BUDGET),
    )


def load_results(url: str, experiment: str) -> ExperimentResults:
    """Every (task, optimizer) pair of ``experiment`` in the store at ``url``, with its finished trials."""
    tune: dict[tuple[str, str], list[TrialRecord]] = {}
    final: dict[tuple[str, str], list[TrialRecord]] = {}
    configs: dict[tuple[str, str], StudyConfig | None] = {}
    with store.guarded(url):
        storage = store.open_storage(url)
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            parsed = store.parse_study_name(summary.study_name)
            if parsed is None or parsed[0] != experiment:
                continue
            _, task, optimizer, phase = parsed
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            configs.setdefault((task, optimizer), None)  # the store's order of pairs
            if phase == "tune":
                tune[task, optimizer] = [_trial("tune", t) for t in finished]
                configs[task, optimizer] = _study_config(study.user_attrs)
            else:
                final[task, optimizer] = [_trial("final", t) for t in finished if t.state == TrialState.COMPLETE]
    pairs = {key: PairResults(*key, tune.get(key, []), final.get(key, []), config) for key, config in configs.items()}
    return ExperimentResults(experiment, pairs)
