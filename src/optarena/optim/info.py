"""What the registry records about an optimizer (kept apart so algorithm modules can declare it)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch.optim import Optimizer

from optarena.optim.hooks import NO_HOOKS, LoopHooks


@dataclass(frozen=True)
class OptimizerInput:
    """A constructor variant the test suites run beside the entry's defaults (as torch's ``OptimizerInput``).

    Declared on the registry entry, so that declaring an optimizer is what puts its variants under the
    invariant, compiled, parity and distributed suites.
    """

    label: str  # the test id is "<entry>-<label>"
    kwargs: dict[str, Any]
    still: dict[str, Any] | None = None  # group values that stop this variant dead, where lr = 0 alone does not
    sharded: bool = False  # it reduces over whole tensors or groups: the distributed suites repeat it
    checkpointed: bool = False  # its non-elementwise state must survive a sharded checkpoint (FSDP2 + DCP)


@dataclass(frozen=True)
class OptimizerErrorInput:
    """Keywords the constructor must refuse that no single declared constraint catches (a rule between keywords)."""

    kwargs: dict[str, Any]
    match: str  # a regular expression the ValueError's message must match


@dataclass(frozen=True)
class OptimizerInfo:
    """What the library knows about one registered optimizer.

    ``defaults`` are keyword arguments ``create_optimizer`` passes before the user's own
    (e.g. ``momentum=0.9`` for ``sgdm``). ``zero_grad_moves`` names the by-design exceptions
    to "a zero gradient with no weight decay moves nothing", with the reason.

    The arena tunes every optimizer over the same shape of search space: ``lr`` log-uniform over
    ``lr_range``, plus the optimizer's own key knobs in ``search_space`` — each a tuple
    ``('log', low, high)``, ``('float', low, high)``, ``('int', low, high)`` or ``('choice', options)``.

    ``test_inputs`` and ``error_inputs`` are what the test suites run and refuse beyond the defaults
    (see :class:`OptimizerInput`); the declared constraints (``optarena.validation``) give the rest.
    """

    name: str
    cls: type[Optimizer]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    supports_complex: bool = True
    supports_sparse: bool = False
    supports_foreach: bool = True
    supports_fused: bool = False
    supports_maximize: bool = True
    supports_agr: bool = False
    paper: str = ""
    code: str = ""
    notes: str = ""
    zero_grad_moves: str = ""
    lr_range: tuple[float, float] = (1e-4, 1e-1)
    search_space: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: Keywords the test suites add to every construction of this entry: values for the keywords it
    #: requires (Adaburst's ``total_steps``), which a training loop supplies through its hooks.
    test_defaults: dict[str, Any] = field(default_factory=dict)
    test_inputs: tuple[OptimizerInput, ...] = ()
    error_inputs: tuple[OptimizerErrorInput, ...] = ()
    no_empty_params: str = ""  # why it cannot take a 0-size parameter ("" when it can)

    @property
    def hooks(self) -> LoopHooks:
        """What a training loop must call for this optimizer (see :mod:`optarena.optim.hooks`)."""
        return getattr(self.cls, "loop_hooks", NO_HOOKS)

    def hyperparameter_defaults(self) -> dict[str, Any]:
        """Every constructor keyword's default, with the registry's overrides applied.

        A constructor that passes ``**options`` on to its base contributes its own keywords and then
        the base's, down to the first constructor that takes no ``**``.
        """
        out: dict[str, Any] = {}
        for klass in self.cls.__mro__:
            if "__init__" not in vars(klass) or klass is Optimizer:
                continue
            parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
            for p in parameters:
                if p.name not in ("self", "params") and p.default is not inspect.Parameter.empty:
                    out.setdefault(p.name, p.default)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                break
        out.update(self.defaults)
        return out
