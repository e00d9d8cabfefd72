"""The spec layer: what an experiment asks for, before anything runs.

The :class:`~optarena.arena.spec.experiment.Experiment` and its checks, the named optimizer
variants, the search space with the sampler and pruner that walk it (and their descriptions, read
back from a stored configuration), and the TOML experiment-file loader. It imports only
:mod:`optarena.arena.tasks` of the arena (tests/test_layers.py checks this).
"""
