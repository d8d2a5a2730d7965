"""Sample-quality metrics for generators on mixtures of Gaussians (the mode-collapse literature:
Unrolled GAN, VEEGAN): a mode is covered when some sample lies within 3 standard deviations of
its centre and that centre is the sample's nearest; a sample is high-quality when it lies
within 3 standard deviations of its nearest centre. The training sources whose samples are scored
say so themselves, with their mode centres (``Source.scored``, ``Source.mode_centres``)."""

from __future__ import annotations

from typing import Literal

import numpy as np

# The scores an evaluation reports for a generator's samples, each with its direction (more
# covered modes and more high-quality samples are better); see onlytorch.monitor.
SAMPLE_SCORES: dict[str, Literal["min", "max"]] = {"modes_covered": "max", "high_quality": "max"}


def mode_coverage(samples: np.ndarray, centres: np.ndarray, std: float, k: float = 3.0) -> dict[str, float]:
    samples = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    d = np.linalg.norm(samples[:, None, :] - centres[None, :, :], axis=-1)
    nearest = d.argmin(axis=1)
    close = d[np.arange(len(samples)), nearest] <= k * std
    covered = np.unique(nearest[close])
    return {
        "modes_covered": float(len(covered)),
        "modes_total": float(len(centres)),
        "high_quality": float(close.mean()) if len(samples) else 0.0,
    }
