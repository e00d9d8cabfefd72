"""The analysis layer: numbers from stored results.

Statistics (confidence intervals, steps- and time-to-target, curve areas, performance profiles) and
views of an experiment's results built from the typed records of
:mod:`optarena.arena.study.records` (never from Optuna trials). It imports only the tasks, spec, run
and study layers of the arena.
"""
