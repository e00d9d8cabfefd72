"""The run layer: one training run of one optimizer on one task.

The runner (curves, diagnostics, the optimizer's declared loop hooks), the checks made before a run
starts (its data, its outputs, its optimizer's options), the ``optarena run`` command's body with
its curves figure, and the launch of one run across processes (DDP, FSDP2). It imports only
:mod:`optarena.arena.tasks` and :mod:`optarena.arena.spec` of the arena.
"""
