"""The features FID is computed on: a classifier trained here on the task's own dataset, or a local Inception.

Standard FID uses the pool features (2,048) of the TensorFlow Inception-v3 trained on ImageNet; its weights
cannot be downloaded on the machines this project runs on. So, by default, the FID of the diffusion tasks is
computed on the penultimate features of a small CNN classifier that is trained here, deterministically (seed 0,
a fixed recipe), on the training split of the same dataset, and cached (:func:`classifier_features`). Its test
accuracy is recorded with every run. **Such an FID is not comparable with published, Inception-based FID
numbers**: it ranks models of one study on one dataset, nothing more.

Where the Inception network is available as a file, :func:`inception_features` uses it instead: the TorchScript
port of the TensorFlow FID Inception that StyleGAN2-ADA and later NVIDIA code load (``inception-2015-12-05.pt``,
called as ``net(images, return_features=True)`` on uint8 images ``(n, 3, h, w)``, which it resizes itself, and
returning ``(n, 2048)`` features); grey images are repeated over three channels, as that code does.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optarena.arena.tasks.idx import cache_dir
from optarena.arena.tasks.models import standardized

RECIPE_VERSION = 1  # bump when the recipe below changes: the cache key changes with it
BATCH = 500  # images per forward pass when extracting features


class FeatureCNN(nn.Module):
    """Three stages of ``depth`` 3×3 conv-BN-ReLU (width, 2·width, 4·width channels), max-pooling between them,
    global average pooling: the pooled ``4·width`` values are the features; a linear layer classifies them."""

    def __init__(self, channels: int, classes: int, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for stage in range(3):
            c_out = width * 2**stage
            for _ in range(depth):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(2) if stage < 2 else nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(c_in, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class ClassifierRecipe:
    """How the feature classifier is trained: SGD with Nesterov momentum, a cosine rate, seed 0."""

    width: int
    depth: int
    epochs: int
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None  # e.g. CIFAR's random crop and flip

    def key(self) -> str:
        """Every setting of the recipe, in words: part of the cache key."""
        augment = getattr(self.augment, "__name__", None)
        settings = (self.width, self.depth, self.epochs, self.lr, self.weight_decay, self.batch_size, augment)
        return f"v{RECIPE_VERSION}-" + "-".join(map(str, settings))

    def network(self, channels: int, classes: int, mean: list[float], std: list[float]) -> nn.Module:
        """The untrained classifier, standardising uint8 input with the per-channel ``mean`` and ``std``."""
        return standardized(FeatureCNN(channels, classes, self.width, self.depth), mean, std)


@dataclass
class Features:
    """A feature extractor for uint8 images and what the report says about it."""

    extract: Callable[[Tensor], np.ndarray]  # uint8 images (n, c, h, w) -> float64 features (n, d)
    info: dict[str, Any]  # 'network', 'description', 'test_accuracy' (None for Inception)


def _channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    values = x.double().div(255).transpose(0, 1).flatten(1)
    return values.mean(1).tolist(), values.std(1).tolist()


@torch.no_grad()
def _extract(net: nn.Module, images: Tensor, device: str) -> np.ndarray:
    net.eval()
    return np.concatenate([net(chunk.to(device)).double().cpu().numpy() for chunk in images.split(BATCH)])


def train_classifier(
    recipe: ClassifierRecipe, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], device: str
) -> tuple[nn.Module, float]:
    """The classifier of ``recipe`` trained on uint8 ``train`` images (seed 0) and its accuracy on ``test``."""
    x, y = train
    torch.manual_seed(0)
    mean, std = _channel_stats(x)
    model = recipe.network(x.shape[1], int(y.max()) + 1, mean, std).to(device)
    batch_size = min(recipe.batch_size, len(y))  # a tiny test set still takes steps
    steps = recipe.epochs * (len(y) // batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(len(y) // batch_size):
            batch = order[i * batch_size : (i + 1) * batch_size]
            xb = x[batch] if recipe.augment is None else recipe.augment(x[batch], generator)
            loss = F.cross_entropy(model(xb.to(device)), y[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    logits = _extract(model, test[0], device)
    return model, float((logits.argmax(1) == test[1].numpy()).mean())


def _digest(recipe: ClassifierRecipe, train: tuple[Tensor, Tensor]) -> str:
    digest = hashlib.sha256(recipe.key().encode())
    for tensor in train:
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def classifier_features(
    name: str, recipe: ClassifierRecipe, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], device: str
) -> Features:
    """The penultimate features of the classifier of ``recipe`` on ``train``: trained once, then read from the cache
    (``<cache>/fid-features/<name>-<digest of the recipe and the training data>.pt``, written atomically)."""
    path = cache_dir() / "fid-features" / f"{name}-{_digest(recipe, train)}.pt"
    x, y = train
    net = recipe.network(x.shape[1], int(y.max()) + 1, [0.0] * x.shape[1], [1.0] * x.shape[1])  # mean, std: loaded
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state_dict"])
        accuracy = float(saved["accuracy"])
    except (OSError, RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError):  # absent or unreadable
        net, accuracy = train_classifier(recipe, train, test, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        state = {k: v.cpu() for k, v in net.state_dict().items()}
        torch.save({"state_dict": state, "accuracy": accuracy, "recipe": recipe.key()}, tmp)
        os.replace(tmp, path)
    net = net.to(device).eval()
    extractor = nn.Sequential(net.input, net.net.features)
    info = {
        "network": "classifier",
        "description": f"penultimate features ({4 * recipe.width}) of a CNN classifier trained on the task's training "
        f"split ({len(y)} images, {recipe.epochs} epochs, seed 0)",
        "test_accuracy": accuracy,
    }
    return Features(lambda images: _extract(extractor, images, device), info)


def inception_features(path: str | Path, device: str) -> Features:
    """The 2,048 pool features of a TorchScript FID Inception (``net(uint8 images, return_features=True)``)."""
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, the format the Inception file is in
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"Invalid inception: {path} is not a loadable TorchScript file ({error})") from None

    @torch.no_grad()
    def extract(images: Tensor) -> np.ndarray:
        chunks = []
        for chunk in images.split(BATCH):
            chunk = chunk.to(device)
            chunk = chunk if chunk.shape[1] == 3 else chunk.repeat(1, 3, 1, 1)
            chunks.append(net(chunk, return_features=True).double().cpu().numpy())
        return np.concatenate(chunks)

    info = {"network": "inception", "description": f"Inception-v3 pool features (TorchScript {path})"}
    return Features(extract, {**info, "test_accuracy": None})
