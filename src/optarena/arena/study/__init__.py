"""The study layer: many runs of an experiment in one Optuna store.

The typed results layer (:mod:`~optarena.arena.study.records`, the only module that knows how runs
are stored), the store itself, what one trial of the protocol does, the queue that several
processes share, and the protocol that ties them together. It imports only the tasks, spec and run
layers of the arena.
"""
