"""The gradient transforms (clipping, centralization, normalization, AGR) against independent oracles.

Oracles: torch's ``clip_grad_norm_`` / ``clip_grad_value_``, pytorch-optimizer's ``centralize_gradient`` and
``normalize_gradient`` (kozistr), and the equations restated here in numpy. No optarena transform is called by
an oracle. The invariant and compiled suites check the same transforms through the registry's ``test_inputs``
(``adamw_agr-*`` and ``sgdm-transforms_wrapper``).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from pytorch_optimizer import centralize_gradient, normalize_gradient
from torch import nn

import optarena
from optarena.optim import AdamW, GradientTransforms
from optarena.optim.transforms import NO_TRANSFORMS, apply_pipeline, global_clip_factor, pipeline

from .helpers import max_diff

STEPS = 20
TOL = 1e-12


def conv_net() -> nn.Module:
    """Conv kernels (4-D), a linear weight (2-D) and biases (1-D): every scope has something to act on."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).double()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(500 + step)
    x = torch.randn(8, 2, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.randn(8, 4, generator=g, dtype=torch.float64)


def groups(model: nn.Module) -> list[dict]:
    """Two groups (weights decayed, biases not), so that clip_norm must reach across groups."""
    weights = [p for p in model.parameters() if p.dim() > 1]
    biases = [p for p in model.parameters() if p.dim() <= 1]
    return [{"params": weights}, {"params": biases, "weight_decay": 0.0}]


def backward(model: nn.Module, step: int) -> None:
    model.zero_grad(set_to_none=True)
    x, y = batch(step)
    (model(x) - y).pow(2).mean().backward()


# --- the oracles: each transform written independently -----------------------------------------------


def oracle_norm(g: torch.Tensor) -> torch.Tensor:
    """g / ‖g‖₂ in numpy (a zero gradient stays zero)."""
    a = g.numpy()
    n = np.sqrt((a * a).sum())
    return torch.from_numpy(a / n if n > 0 else a.copy())


def oracle_transform(params: list[torch.Tensor], options: dict) -> None:
    """Rewrite ``p.grad`` in the stated order with torch's and kozistr's utilities and numpy."""
    if options.get("clip_norm") is not None:
        torch.nn.utils.clip_grad_norm_(params, options["clip_norm"], foreach=False)
    if options.get("clip_value") is not None:
        torch.nn.utils.clip_grad_value_(params, options["clip_value"], foreach=False)
    for p in params:
        if options.get("centralize") is not None:
            centralize_gradient(p.grad, gc_conv_only=options["centralize"] == "conv")
        if options.get("normalize") == "std":
            normalize_gradient(p.grad, use_channels=False, epsilon=1e-8)
        elif options.get("normalize") == "norm":
            p.grad = oracle_norm(p.grad)
        if options.get("agr") is not None and p.dim() >= 2:  # AGR, the paper's equation, on the weights
            alpha = p.grad.abs() / p.grad.abs().sum()
            p.grad = p.grad - alpha * p.grad


CONFIGS = {
    "clip_norm": {"clip_norm": 0.05},
    "clip_value": {"clip_value": 2e-3},
    "centralize_weights": {"centralize": "weights"},
    "centralize_conv": {"centralize": "conv"},
    "normalize_norm": {"normalize": "norm"},
    "normalize_std": {"normalize": "std"},
    "all_in_order": {
        "clip_norm": 0.05,
        "clip_value": 2e-3,
        "centralize": "weights",
        "normalize": "norm",
        "agr": "code",
    },
}
ADAMW = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)


def run(make, options: dict, oracle: bool = False) -> list[torch.Tensor]:
    model = conv_net()
    opt = make(groups(model))
    params = list(model.parameters())
    for k in range(STEPS):
        backward(model, k)
        if oracle:
            oracle_transform(params, options)
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("label", list(CONFIGS))
def test_engine_transforms_equal_torch_adamw_on_oracle_gradients(label, foreach):
    options = CONFIGS[label]
    ours = run(lambda g: AdamW(g, foreach=foreach, agr_scope="weights", **ADAMW, **options), options)
    reference = run(lambda g: torch.optim.AdamW(g, foreach=False, **ADAMW), options, oracle=True)
    assert max_diff(ours, reference) <= TOL


@pytest.mark.parametrize("label", list(CONFIGS))
def test_the_wrapper_around_a_torch_optimizer_equals_the_oracle(label):
    options = CONFIGS[label]
    ours = run(lambda g: optarena.create_optimizer(g, "adamw", foreach=False, **ADAMW, **options), options)
    reference = run(lambda g: torch.optim.AdamW(g, foreach=False, **ADAMW), options, oracle=True)
    assert max_diff(ours, reference) <= TOL


def test_create_optimizer_wraps_torch_baselines_and_passes_engine_options():
    model = conv_net()
    wrapped = optarena.create_optimizer(model, "adamw", centralize="weights", agr="code")
    assert isinstance(wrapped, GradientTransforms) and isinstance(wrapped.optimizer, torch.optim.AdamW)
    agr_only = optarena.create_optimizer(model, "adamw", agr="code")
    assert type(agr_only) is optarena.AGR  # AGR alone keeps its wrapper (and its state key)
    engine = optarena.create_optimizer(model, "adamw_agr", normalize="std")
    assert isinstance(engine, AdamW) and all(g["normalize"] == "std" for g in engine.param_groups)


# --- single transforms on known tensors ----------------------------------------------------------------


def test_centralization_is_the_papers_equation():
    """Yong et al. (2020), eq. 3: Φ(∇w_i) = ∇w_i − mean(∇w_i), per output channel (row) of a weight."""
    torch.manual_seed(1)
    conv, linear, bias = torch.randn(3, 2, 3, 3), torch.randn(4, 5), torch.randn(4)
    groups_ = [conv, linear, bias]
    for scope, touched in (("weights", {0, 1}), ("conv", {0})):
        group = {**NO_TRANSFORMS, "centralize": scope}
        out, _ = apply_pipeline(pipeline(group), groups_, [1.0] * 3, foreach=True)
        for i, (g, o) in enumerate(zip(groups_, out)):
            a = g.numpy().reshape(g.shape[0], -1) if g.dim() > 1 else g.numpy()
            expected = a - a.mean(axis=1, keepdims=True) if i in touched else a
            np.testing.assert_allclose(o.numpy().reshape(expected.shape), expected, rtol=0, atol=1e-6)
        assert all(g is not o or i not in touched for i, (g, o) in enumerate(zip(groups_, out)))


def test_centralize_then_normalize_gives_zero_mean_rows_of_unit_norm():
    """The stated order: normalizing last keeps the unit norm (the other order would lose it)."""
    torch.manual_seed(2)
    grads = [torch.randn(6, 7, dtype=torch.float64), torch.randn(5, 2, 3, 3, dtype=torch.float64)]
    group = {**NO_TRANSFORMS, "centralize": "weights", "normalize": "norm"}
    for foreach in (False, True):
        out, _ = apply_pipeline(pipeline(group), grads, [1.0, 1.0], foreach=foreach)
        for o in out:
            assert torch.linalg.vector_norm(o).item() == pytest.approx(1.0, abs=1e-14)
            assert o.reshape(o.shape[0], -1).mean(dim=1).abs().max().item() <= 1e-15


def test_zero_gradients_stay_zero_and_small_tensors_keep_their_std():
    zero, tiny = torch.zeros(3, 4), torch.tensor([2.0, -1.0])
    for kind in ("norm", "std"):
        out, _ = apply_pipeline(pipeline({**NO_TRANSFORMS, "normalize": kind}), [zero, tiny], [1.0, 1.0], foreach=True)
        assert torch.equal(out[0], zero)
    out, _ = apply_pipeline(pipeline({**NO_TRANSFORMS, "normalize": "std"}), [tiny], [1.0], foreach=False)
    assert torch.equal(out[0], tiny)  # at most 2 elements: left alone, as kozistr's normalize_gradient


def test_the_clip_factor_is_clip_grad_norm_s_across_every_tensor():
    torch.manual_seed(3)
    grads = [torch.randn(4, 4, dtype=torch.float64), torch.randn(7, dtype=torch.float64)]
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=False)
    assert global_clip_factor(grads, 0.5).item() == pytest.approx(0.5 / (norm.item() + 1e-6), rel=1e-15)
    assert global_clip_factor(grads, 1e6).item() == 1.0  # below the limit: unchanged


# --- the rules: optimizer-wide clip, bad input, old files --------------------------------------------


def test_clip_norm_is_optimizer_wide():
    model = conv_net()
    opt = AdamW(groups(model)[:1], clip_norm=1.0)
    with pytest.raises(ValueError, match=r"Invalid clip_norm: 2\.0.*optimizer's.*constructor's value 1\.0"):
        opt.add_param_group({"params": groups(model)[1]["params"], "clip_norm": 2.0})
    opt.add_param_group({"params": groups(model)[1]["params"]})  # inherits the constructor's value


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip_norm": 0.0}, r"Invalid clip_norm: 0\.0; expected None or a finite value in \(0, inf\)"),
        ({"clip_value": -1.0}, r"Invalid clip_value: -1\.0"),
        ({"clip_norm": float("nan")}, r"Invalid clip_norm: nan"),
        ({"centralize": "bias"}, r"Invalid centralize: 'bias'; expected None or one of 'weights', 'conv'"),
        ({"normalize": True}, r"Invalid normalize: True; expected None or one of 'norm', 'std'"),
    ],
)
@pytest.mark.parametrize("name", ["adamw", "adamw_agr", "sgdm"])
def test_bad_transform_options_are_refused_by_name(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        optarena.create_optimizer(conv_net(), name, **kwargs)


def test_baselines_refuse_agr_paper_and_agr_options_without_agr():
    with pytest.raises(ValueError, match=r"Invalid agr: 'paper'; adamw is not built on the optarena engine"):
        optarena.create_optimizer(conv_net(), "adamw", agr="paper")
    with pytest.raises(ValueError, match=r"Invalid agr_scope: set agr='code' to use them"):
        optarena.create_optimizer(conv_net(), "adamw", agr_scope="all")


def test_a_state_saved_before_the_transforms_existed_loads_with_them_off():
    model = conv_net()
    opt = AdamW(groups(model), **ADAMW)
    backward(model, 0)
    opt.step()
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:
        for key in ("clip_norm", "clip_value", "centralize", "normalize"):
            del group[key]
    fresh = AdamW(groups(conv_net()), **ADAMW)
    fresh.load_state_dict(old)
    assert all(g["clip_norm"] is None and g["centralize"] is None for g in fresh.param_groups)


def test_the_wrapper_puts_the_original_gradients_back():
    model = conv_net()
    opt = GradientTransforms(torch.optim.SGD(model.parameters(), lr=0.1), centralize="weights", normalize="norm")
    backward(model, 0)
    before = [p.grad.clone() for p in model.parameters()]
    identities = [id(p.grad) for p in model.parameters()]
    opt.step()
    assert [id(p.grad) for p in model.parameters()] == identities
    assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before))
    with pytest.raises(ValueError, match=r"Invalid agr: 'paper'"):
        GradientTransforms(torch.optim.SGD(model.parameters(), lr=0.1), agr="paper")


def test_centralization_compiles_on_a_transformer_block():
    """A GPT block's shapes (layer norms, qkv, projections): torch 2.13's CPU inductor failed to compile GC's mean
    fused into AdamW's kernel until the mean got a buffer of its own; the compiled step must not fall back."""
    d = 8
    shapes = [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    torch.manual_seed(4)
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(3)]
    finals = []
    for compile_ in (False, True):
        params = [nn.Parameter(torch.ones(s, dtype=torch.float64)) for s in shapes]
        opt = optarena.create_optimizer(params, "adamw_agr", agr=None, centralize="weights", compile=compile_)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager warns
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad = g.clone()
                opt.step()
        finals.append([p.detach().clone() for p in params])
    assert max_diff(finals[0], finals[1]) <= TOL


def test_the_arena_compares_agr_with_its_comparators_on_one_base(tmp_path):
    """experiments/evidence/agr_comparators.toml: every method is torch's AdamW with one transform in front, and
    the arena runs them under one budget (here digits, 1 trial, 1 seed, 1 epoch)."""
    from pathlib import Path

    from optarena.arena.cli import main
    from optarena.arena.spec.config import load_experiment_file
    from optarena.arena.spec.variants import parse_variants

    path = Path(__file__).resolve().parents[1] / "experiments" / "evidence" / "agr_comparators.toml"
    experiment = load_experiment_file(path)
    specs = parse_variants(experiment.variants)
    built = {
        name: optarena.create_optimizer(conv_net(), spec.optimizer, **spec.options) for name, spec in specs.items()
    }
    assert {name: type(opt).__name__ for name, opt in built.items()} == {
        "adamw_agr_wrapped": "AGR",
        "adamw_gc": "GradientTransforms",
        "adamw_gn": "GradientTransforms",
        "adamw_clip": "GradientTransforms",
        "adamw_gc_agr": "GradientTransforms",
    }
    assert all(isinstance(opt.optimizer, torch.optim.AdamW) for opt in built.values())
    store = f"sqlite:///{tmp_path / 'store.db'}"
    argv = ["compare", "--config", str(path), "--task", "digits", "--trials", "1", "--seeds", "1", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--storage", store]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert all(name in report for name in ("adamw_gc", "adamw_gn", "adamw_clip", "adamw_agr_wrapped"))
