"""The Fréchet distance between two sets of features, and the k-NN precision and recall of a generated set.

FID (Heusel et al., 2017) fits a Gaussian to each set of features and measures
‖μ_1 − μ_2‖² + tr Σ_1 + tr Σ_2 − 2 tr (Σ_1 Σ_2)^{1/2}. The usual code (pytorch-fid) takes the square root of
the non-symmetric product with ``scipy.linalg.sqrtm`` and drops the imaginary part it may return; here the
trace is computed in the equivalent symmetric form tr (Σ_1^{1/2} Σ_2 Σ_1^{1/2})^{1/2} = Σ_i √λ_i from two
symmetric eigendecompositions, which is real and stable for the rank-deficient covariances of a few hundred
samples. ``tests/test_diffusion.py`` checks it against the sqrtm form.

Precision and recall (Kynkäänniemi et al., 2019): each set's manifold is the union of balls around its
points, each reaching to its k-th nearest neighbour in the set; precision is the fraction of generated
points inside the real manifold (are the samples realistic?), recall the fraction of real points inside
the generated one (do the samples cover the data? a collapsed generator has low recall).
"""

from __future__ import annotations

import numpy as np

CHUNK = 1024  # rows of a distance matrix computed at once: a 10,000-sample set never needs 800 MB


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the covariance (unbiased, as ``np.cov``) of ``features`` ``(n, d)``, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"Invalid features: shape {features.shape}; expected (n, d) with n >= 2")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"Invalid statistics: means {mu1.shape}, {mu2.shape} and covariances {sigma1.shape}, "
                         f"{sigma2.shape} do not describe two Gaussians of one dimension")  # fmt: skip
    root = _sqrt_psd(sigma1)
    middle = root @ sigma2 @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians fitted to two sets of features."""
    return frechet_distance(*statistics(features_a), *statistics(features_b))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(squared, 0, None))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point of ``x``."""
    radii = np.empty(len(x))
    for i in range(0, len(x), CHUNK):
        d = _distances(x[i : i + CHUNK], x)
        radii[i : i + CHUNK] = np.partition(d, k, axis=1)[:, k]  # column 0 of the sorted row is the point itself
    return radii


def _covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each of ``points`` lies in some ball (``centres``, ``radii``)."""
    inside = np.zeros(len(points), dtype=bool)
    for i in range(0, len(centres), CHUNK):
        d = _distances(centres[i : i + CHUNK], points)
        inside |= (d <= radii[i : i + CHUNK, None]).any(axis=0)
    return inside


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al.'s precision and recall of ``generated`` against ``real`` features (k-NN balls)."""
    real, generated = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"Invalid k: {k}; each set needs more than k points ({len(real)}, {len(generated)})")
    precision = _covered(generated, real, _knn_radii(real, k)).mean()
    recall = _covered(real, generated, _knn_radii(generated, k)).mean()
    return float(precision), float(recall)
