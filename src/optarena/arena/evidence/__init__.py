"""The evidence layer: the seed papers' claims re-tested from the arena's stores.

Claims files, the verdict on each claim (paired intervals over seeds), the learning-rate sensitivity
and compute budget of the experiments, the evidence page, and the ``optarena evidence`` command's
body. It reads results through :mod:`optarena.arena.study.records` and the analysis layer's views,
draws with the render layer's public figures, and may import every layer but the CLI.
"""
