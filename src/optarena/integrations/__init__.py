"""Training frameworks driving optarena's optimizers: Lightning and the Hugging Face Trainer.

An optarena optimizer is a plain ``torch.optim.Optimizer``, so any framework can step it. What a framework does
not do is what some optimizers declare they need from the loop (:mod:`optarena.optim.hooks`): Adaburst's burst
trigger wants every step's loss (or the epoch's metric) and its cosine wants the run's length; SophiaG refreshes
its Hessian estimate every few steps. The modules here do it from the framework's own callback points:

* :mod:`optarena.integrations.lightning` — ``OptarenaCallback`` and a ``configure_optimizers`` recipe
  (``pip install "optarena[lightning]"``);
* :mod:`optarena.integrations.hf` — ``OptarenaTrainerCallback`` and ``create_optimizers`` for
  ``Trainer(optimizers=...)`` (``pip install "optarena[hf]"``);
* :mod:`optarena.integrations.loop` — the part both share, which imports no framework.

Importing ``optarena`` imports none of them; importing one of the framework modules imports its framework.
"""
