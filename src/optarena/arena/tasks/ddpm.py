"""Denoising diffusion: the DDPM noise schedule and loss, the deterministic DDIM sampler, and the weights' EMA.

* Forward process (Ho et al., 2020, Eq. 4): q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) with ᾱ_t = ∏_{s≤t} (1 − β_s)
  and the paper's linear schedule β_1 = 1e-4 … β_T = 0.02, T = 1000 (timesteps are indexed 0 … T − 1 here).
* Loss (the paper's L_simple, Eq. 14): the mean squared error between the noise ε and the network's ε̂(x_t, t),
  t uniform over the T steps.
* Sampler: DDIM with η = 0 (Song et al., 2021, Eq. 12), deterministic given x_T, over ``steps`` timesteps
  spaced uniformly as the DDIM paper's "linear" skip, τ = (0, T/S, 2T/S, …). The predicted x̂_0 is clipped to
  the data range [−1, 1], as the DDPM code clips its sampler's, and ε̂ recomputed from it, so that
  x_t = √ᾱ_t x̂_0 + √(1 − ᾱ_t) ε̂ still holds and the step stays the DDIM step.
* EMA of the weights (the DDPM paper evaluates and samples with an EMA of decay 0.9999): after the n-th update
  the decay is min(decay, (1 + n)/(10 + n)), TensorFlow's ``ExponentialMovingAverage(num_updates=n)``, so the
  average forgets its random start within the few thousand steps a CPU run has.
"""

from __future__ import annotations

import base64
import copy
import io
import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


class NoiseSchedule:
    """The DDPM linear β schedule and the forward process it defines (float64 tables, cast on use)."""

    def __init__(self, timesteps: int = TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END) -> None:
        if timesteps < 1:
            raise ValueError(f"Invalid timesteps: {timesteps}; expected an integer >= 1")
        self.timesteps = timesteps
        self.betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.alpha_bars = torch.cumprod(1 - self.betas, dim=0)

    def alpha_bar(self, t: Tensor, like: Tensor) -> Tensor:
        """ᾱ_t for integer timesteps ``t``, shaped to broadcast over images like ``like``."""
        values = self.alpha_bars.to(like.device)[t].to(like.dtype)
        return values.reshape(-1, *(1,) * (like.ndim - 1))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a draw of q(x_t | x_0) for the given noise."""
        alpha_bar = self.alpha_bar(t, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def loss(self, model: nn.Module, x0: Tensor, t: Tensor, noise: Tensor, reduction: str = "mean") -> Tensor:
        """‖ε − ε̂(x_t, t)‖² per pixel: the mean (``'mean'``) or one value per example (``'none'``)."""
        error = (model(self.q_sample(x0, t, noise), t) - noise).square()
        per_example = error.flatten(1).mean(dim=1)
        return per_example.mean() if reduction == "mean" else per_example

    def ddim_timesteps(self, steps: int) -> list[int]:
        """The DDIM paper's uniformly skipped timesteps, descending: the sampler visits each once."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"Invalid steps: {steps}; expected an integer in [1, {self.timesteps}]")
        return list(range(0, self.timesteps, self.timesteps // steps))[:steps][::-1]

    @torch.no_grad()
    def ddim_sample(self, model: nn.Module, x_T: Tensor, steps: int, batch_size: int = 500) -> Tensor:
        """x_0 from the noise ``x_T`` by DDIM (η = 0) in ``steps`` steps, in batches; values in [−1, 1]."""
        was_training = model.training
        model.eval()
        out = []
        for chunk in x_T.split(batch_size):
            x = chunk
            sequence = self.ddim_timesteps(steps)
            for i, t in enumerate(sequence):
                timestep = torch.full((len(x),), t, device=x.device, dtype=torch.long)
                alpha_bar = float(self.alpha_bars[t])
                alpha_prev = float(self.alpha_bars[sequence[i + 1]]) if i + 1 < len(sequence) else 1.0
                eps = model(x, timestep)
                x0 = ((x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)).clamp(-1, 1)
                eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)  # the ε that the clipped x̂_0 implies
                x = math.sqrt(alpha_prev) * x0 + math.sqrt(1 - alpha_prev) * eps
            out.append(x)
        model.train(was_training)
        return torch.cat(out)


class EMA:
    """An exponential moving average of a model's parameters, held in a copy of the model (``ema.model``).

    ``update()`` after every optimizer step: θ_ema ← d θ_ema + (1 − d) θ with d = min(decay, (1 + n)/(10 + n))
    at the n-th update (n = 0, 1, …); buffers are copied. ``decay = 0`` makes the copy the weights themselves.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"Invalid ema_decay: {decay}; expected a number in [0, 1)")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.model.eval()

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for average, param in zip(self.model.parameters(), model.parameters()):
            average.lerp_(param.detach(), 1 - decay)  # average + (1 − d)(θ − average) = d average + (1 − d) θ
        for average, buffer in zip(self.model.buffers(), model.buffers()):
            average.copy_(buffer)
        self.updates += 1


def to_uint8(x: Tensor) -> Tensor:
    """Images in [−1, 1] as uint8 pixels (rounded), the form real images are stored and scored in."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: Tensor) -> Tensor:
    """uint8 pixels as floats in [−1, 1]."""
    return x.float() / 127.5 - 1


def png_grid(images: Tensor, columns: int, padding: int = 2) -> str:
    """uint8 images ``(n, c, h, w)`` tiled ``columns`` wide on a white background, as a base64 PNG."""
    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, dtype=np.uint8)
    for i, image in enumerate(images.cpu().numpy()):
        top, left = padding + (i // columns) * (h + padding), padding + (i % columns) * (w + padding)
        grid[top : top + h, left : left + w] = image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(grid[:, :, 0] if c == 1 else grid).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
