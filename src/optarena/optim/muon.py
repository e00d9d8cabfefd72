"""Muon for the 2-D weights with AdamW for every other parameter, in one optimizer, as its authors use it.

Muon (Keller Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024) runs SGD momentum and
replaces each 2-D update by an approximately orthogonal matrix (a quintic Newton–Schulz iteration). It is
meant for hidden weight matrices only: Keller Jordan's ``MuonWithAuxAdam`` (``KellerJordan/Muon``
``muon.py``) is one optimizer whose param groups carry a ``use_muon`` flag, Muon's groups stepped by Muon
and the rest (biases, norm gains, embeddings, the output head) by AdamW. This is that optimizer, with
torch's own update code on both sides:

* ``use_muon=True`` groups: :class:`torch.optim.Muon`'s ``_init_group`` and its functional ``muon``
  (2-D parameters only, as torch requires);
* ``use_muon=False`` groups: :class:`torch.optim.AdamW`'s ``_init_group`` and its functional ``adam`` with
  ``decoupled_weight_decay=True`` (foreach where torch picks it).

Given plain parameters, or groups without ``use_muon`` (what :func:`~optarena.optim.registry.create_optimizer`
passes, e.g. the two weight-decay groups of ``param_groups_for``), each group is split by shape: its 2-D
tensors make a Muon group and the rest an AdamW group. A key the group sets applies to both halves
(``lr``, ``eps``, ``weight_decay``, ``maximize``) or to the half it belongs to (``momentum``, ``betas``, ...);
``adamw_lr``, ``adamw_betas``, ``adamw_eps`` and ``adamw_weight_decay`` set the AdamW half's. Each group
keeps its own ``lr``, so a learning-rate scheduler scales both sides. :func:`muon_param_groups` splits a
model the way the authors do (embeddings and a named head to AdamW). See ``docs/algorithms/muon.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributed.tensor import distribute_tensor
from torch.optim import AdamW, Muon
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, DEFAULT_NS_STEPS, EPS, muon
from torch.optim.adam import adam

from optarena.optim.functional import full_tensor, is_sharded
from optarena.optim.guarded import GuardedOptimizer
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.validation import NON_NEGATIVE, Constraint, Flag, Integer, Items, OneOf, Real, betas, check_declared

# A group's keys by side; "lr", "eps", "weight_decay" and "maximize" belong to both.
MUON_KEYS = ("lr", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn", "weight_decay")
ADAMW_KEYS = ("lr", "betas", "eps", "weight_decay", "foreach")
#: Constructor keywords (and group keys) for the AdamW side, and the group key each one sets there.
ADAMW_ALIASES = {"adamw_lr": "lr", "adamw_betas": "betas", "adamw_eps": "eps", "adamw_weight_decay": "weight_decay"}
_KNOWN = {*MUON_KEYS, *ADAMW_KEYS, *ADAMW_ALIASES, "params", "param_names", "use_muon", "maximize"}
# Torch's AdamW flags this optimizer fixes: no AMSGrad, no capturable or differentiable step, no fused kernel.
_ADAMW_FIXED = {"amsgrad": False, "capturable": False, "differentiable": False, "fused": False}


def _tensor(p: Any) -> Tensor:
    return p[1] if isinstance(p, tuple) else p  # a (name, tensor) pair, as torch accepts


class MuonWithAuxAdamW(GuardedOptimizer):
    """Muon on 2-D weights, AdamW on the rest (Keller Jordan's ``MuonWithAuxAdam``), with torch's updates.

    Args:
        params: parameters, or param groups with or without ``use_muon`` (see the module docstring).
        lr: Muon's learning rate (default 0.02, ``MuonWithAuxAdam``; torch's Muon has 1e-3, for
            ``adjust_lr_fn='match_rms_adamw'``).
        momentum: Muon's momentum μ, in [0, 1) (default 0.95, ``MuonWithAuxAdam`` and torch).
        nesterov: Nesterov momentum (default True, Keller Jordan's ``muon_update`` and torch).
        ns_coefficients: the Newton–Schulz quintic's (a, b, c) (default (3.4445, −4.7750, 2.0315), both).
        eps: the floor of the norm the iteration first divides by (default 1e-7, torch; Keller adds it).
        ns_steps: Newton–Schulz iterations, 0 to 99 (default 5, both).
        adjust_lr_fn: ``None``/``'original'`` (lr·√max(1, rows/cols), Keller Jordan's) or ``'match_rms_adamw'``
            (lr·0.2·√max(rows, cols), Moonshot's) (default None, torch).
        weight_decay: Muon's decoupled decay θ(1 − lr·λ) (default 0, ``MuonWithAuxAdam``; torch has 0.1).
        adamw_lr: the AdamW side's learning rate (default 3e-4, ``MuonWithAuxAdam``).
        adamw_betas: its (β1, β2) (default (0.9, 0.95), ``MuonWithAuxAdam``).
        adamw_eps: its ε (default 1e-10, ``MuonWithAuxAdam``).
        adamw_weight_decay: its decoupled decay (default 0, ``MuonWithAuxAdam``).
        maximize: maximize the objective (both sides; Muon's gradients are negated on a copy).
        foreach: torch's AdamW path (None: torch's choice); Muon has no foreach path in torch 2.13.
        nonfinite: the non-finite gradient policy, see :mod:`optarena.optim.guarded`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        "use_muon": Flag(),
        "lr": NON_NEGATIVE,
        "momentum": Real(0.0, 1.0, high_open=True),
        "nesterov": Flag(),
        "ns_coefficients": Items((Real(), Real(), Real())),
        "eps": NON_NEGATIVE,
        "ns_steps": Integer(0, 99),
        "adjust_lr_fn": OneOf(("original", "match_rms_adamw"), optional=True),
        "weight_decay": NON_NEGATIVE,
        "betas": betas(2),
        "adamw_lr": NON_NEGATIVE,
        "adamw_betas": betas(2),
        "adamw_eps": NON_NEGATIVE,
        "adamw_weight_decay": NON_NEGATIVE,
        "maximize": Flag(),
        "foreach": Flag(optional=True),
    }
    state_owner: ClassVar[str] = "optarena.MuonWithAuxAdamW"

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
        eps: float = EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: str | None = None,
        weight_decay: float = 0.0,
        *,
        adamw_lr: float | Tensor = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
        nonfinite: str = "propagate",
    ) -> None:
        self._set_nonfinite_policy(nonfinite)
        muon_side = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            weight_decay=weight_decay,
        )
        adamw_side = dict(adamw_lr=adamw_lr, adamw_betas=adamw_betas, adamw_eps=adamw_eps)
        adamw_side.update(adamw_weight_decay=adamw_weight_decay, maximize=maximize, foreach=foreach)
        check_declared({**muon_side, **adamw_side}, self.declared_hyperparameters())
        self._check_muon_eps(eps)
        self.muon_defaults: dict[str, Any] = {"use_muon": True, **muon_side, "maximize": maximize}
        self.adamw_defaults: dict[str, Any] = {"use_muon": False, "maximize": maximize, "foreach": foreach}
        self.adamw_defaults.update({plain: adamw_side[alias] for alias, plain in ADAMW_ALIASES.items()})
        super().__init__(params, {})  # each group takes its side's defaults in add_param_group

    # -- groups ------------------------------------------------------------------------------------

    @staticmethod
    def _check_muon_eps(eps: Any) -> None:
        if isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps == 0:
            raise ValueError(
                f"Invalid eps: {eps!r}; a Muon group's eps must be > 0 (a zero update would divide 0 by 0)"
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: as it is if it sets ``use_muon``, else split into its 2-D (Muon) and other (AdamW) tensors.

        Every keyword the group sets is checked first, and nothing is added unless every half is valid.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, not a set")
        params = list(params)
        check_declared(param_group, self.declared_hyperparameters())
        names = param_group.get("param_names")
        if "use_muon" in param_group:
            sides = [(param_group["use_muon"], list(range(len(params))))]
        else:
            flat = [i for i, p in enumerate(params) if _tensor(p).dim() == 2]
            other = [i for i, p in enumerate(params) if _tensor(p).dim() != 2]
            sides = [(kind, idx) for kind, idx in ((True, flat), (False, other)) if idx] or [(False, [])]
        groups = []
        for use_muon, idx in sides:
            group = self._side(param_group, use_muon)
            group["params"] = [params[i] for i in idx]
            if names is not None and len(names) == len(params):
                group["param_names"] = [names[i] for i in idx]
            self._validate_group(group)
            groups.append(group)
        existing = {p for g in self.param_groups for p in g["params"]}
        if any(_tensor(p) in existing for group in groups for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        for group in groups:
            super().add_param_group(group)

    def _side(self, param_group: dict[str, Any], use_muon: bool) -> dict[str, Any]:
        """One side's group: its defaults, the keys of ``param_group`` that apply to it, and the user's own keys."""
        own = MUON_KEYS if use_muon else ADAMW_KEYS
        group = {k: v for k, v in param_group.items() if k not in _KNOWN}
        group.update({k: param_group[k] for k in (*own, "maximize") if k in param_group})
        if not use_muon:
            group.update({plain: param_group[alias] for alias, plain in ADAMW_ALIASES.items() if alias in param_group})
        return {**(self.muon_defaults if use_muon else self.adamw_defaults), **group, "use_muon": use_muon}

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        if group.get("use_muon"):
            self._check_muon_eps(group.get("eps"))
            for p in group.get("params", ()):  # a saved group's params are indices: nothing to check
                if isinstance(_tensor(p), Tensor) and _tensor(p).dim() != 2:
                    raise ValueError(
                        f"Invalid params: a use_muon=True group takes 2-D tensors only (torch.optim.Muon); one has "
                        f"shape {tuple(_tensor(p).shape)}: give it to a use_muon=False group, or leave use_muon unset"
                    )

    # -- the step ----------------------------------------------------------------------------------

    def _apply_step(self, **kwargs: Any) -> None:
        """torch's Muon on the ``use_muon`` groups, torch's AdamW on the rest; every group gathered first,
        so that a sparse or complex gradient refused by torch changes nothing."""
        work = []
        for group in self.param_groups:
            if group["use_muon"]:
                params: list[Tensor] = []
                grads: list[Tensor] = []
                buffers: list[Tensor] = []
                Muon._init_group(self, group, params, grads, buffers)
                work.append((group, (params, grads, buffers), False))
            else:
                lists: tuple[list[Tensor], ...] = ([], [], [], [], [], [])
                has_complex = AdamW._init_group(self, {**group, **_ADAMW_FIXED}, *lists)
                work.append((group, lists, has_complex))
        for group, lists, has_complex in work:
            if not lists[0]:
                continue
            if group["use_muon"]:
                self._muon_step(group, *lists)
            else:
                self._adamw_step(group, lists, has_complex)

    @staticmethod
    def _muon_step(group: dict[str, Any], params: list[Tensor], grads: list[Tensor], buffers: list[Tensor]) -> None:
        """torch's functional Muon; a sharded matrix (DTensor) is updated whole, on every rank, then re-sharded.

        The Newton–Schulz iteration needs the whole matrix: torch's code on a DTensor would multiply shards in
        bfloat16 in another order than one process does. Gathered, the update is one process's, bit for bit;
        the cost is one matrix's gradient, momentum and weight at a time.
        """
        if group["maximize"]:
            grads = list(torch._foreach_neg(grads))  # torch's Muon has no maximize: ascend on a copy
        hyper = dict(
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            ns_coefficients=tuple(group["ns_coefficients"]),
            ns_steps=group["ns_steps"],
            eps=group["eps"],
            adjust_lr_fn=group["adjust_lr_fn"],
            has_complex=False,
        )
        local = [i for i, p in enumerate(params) if not is_sharded(p)]
        if local:
            muon([params[i] for i in local], [grads[i] for i in local], [buffers[i] for i in local], **hyper)
        for i in (i for i, p in enumerate(params) if is_sharded(p)):
            whole = [full_tensor(t) for t in (params[i], grads[i], buffers[i])]
            muon([whole[0]], [whole[1]], [whole[2]], **hyper)
            for target, value in ((params[i], whole[0]), (buffers[i], whole[2])):
                target.copy_(distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None))

    @staticmethod
    def _adamw_step(group: dict[str, Any], lists: tuple[list[Tensor], ...], has_complex: bool) -> None:
        beta1, beta2 = group["betas"]
        adam(
            *lists,
            foreach=group["foreach"],
            has_complex=has_complex,
            decoupled_weight_decay=True,  # torch.optim.AdamW's step
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    # -- copies --------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "muon_defaults": self.muon_defaults, "adamw_defaults": self.adamw_defaults}


def muon_param_groups(model: nn.Module, *, aux_modules: Iterable[nn.Module] = ()) -> list[dict[str, Any]]:
    """``model``'s trainable parameters split as the authors split them, ready for :class:`MuonWithAuxAdamW`.

    Muon takes the 2-D weights of hidden layers. AdamW takes the embeddings (``nn.Embedding``,
    ``nn.EmbeddingBag``), every parameter of ``aux_modules`` (name the output head here: Keller Jordan gives
    ``lm_head`` to Adam) and every parameter that is not 2-D (biases, norm gains, conv filters, which
    torch's Muon does not take).
    """
    aux = {id(p) for m in aux_modules for p in m.parameters()}
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            aux.update(id(p) for p in module.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in trainable if p.dim() == 2 and id(p) not in aux]
    rest = [p for p in trainable if p.dim() != 2 or id(p) in aux]
    groups = [{"params": ps, "use_muon": flag} for ps, flag in ((hidden, True), (rest, False)) if ps]
    if not groups:
        raise ValueError("Invalid model: it has no trainable parameters")
    return groups


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "muon",
        MuonWithAuxAdamW,
        "Muon (orthogonalized momentum) on 2-D weights, AdamW on the rest: Keller Jordan's MuonWithAuxAdam",
        supports_complex=False,  # torch's Muon refuses complex matrices (complex non-2-D tensors go to AdamW)
        paper="Jordan et al., Muon: An optimizer for hidden layers in neural networks, 2024 "
        "(kellerjordan.github.io/posts/muon)",
        code="torch.optim.Muon + torch.optim.AdamW; github.com/KellerJordan/Muon (muon.py, MuonWithAuxAdam)",
        notes="plain parameters are split by shape (2-D to Muon); muon_param_groups(model, aux_modules=[head]) "
        "gives embeddings and the head to AdamW as the authors do; lr is Muon's, adamw_lr AdamW's",
        lr_range=(1e-3, 0.3),
        search_space={"adamw_lr": ("log", 1e-4, 1e-2)},
        test_inputs=(
            OptimizerInput(
                "torch_defaults",
                {"adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.1, "nesterov": False},
            ),
        ),
    )
]
