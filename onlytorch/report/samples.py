"""A generator's samples (``samples.npz``, written by an evaluation with ``eval.samples``): read,
checked, and drawn as 2-D points over the real data (coloured by class for a conditional
generator) or as a grid of images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluation import FIELD_PREFIX
from .canvas import new_figure, run_title

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .reading import Run


def read_samples(path: Path, notes: list[str]) -> dict[str, np.ndarray] | None:
    """The samples of ``path`` ready to draw: ``{"images": (n, h, w)}`` for image samples, else
    ``fake`` (and ``real``, ``centres``, a conditional generator's class field) as (n, 2) points with
    non-finite ones left out. None, with a note saying why, when there is nothing to draw."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("fake", "real", "centres") if k in data.files}
    except Exception as e:  # a broken samples file must not stop the report
        notes.append(f"cannot read {path.name} ({type(e).__name__}: {e}); no samples picture")
        return None
    images = _as_images(arrays.get("fake"))
    if images is not None:  # image samples (n, 1, h, w) or flat square ones (n, h*w): drawn as a grid
        return {"images": images}
    bad = [k for k, a in arrays.items() if a.ndim != 2 or a.shape[1] != 2]
    if "fake" not in arrays or bad:
        what = f"arrays {', '.join(bad)} are not (n, 2)" if bad else "there is no array 'fake'"
        notes.append(f"{path.name}: {what}; no samples picture")
        return None
    labels = _condition_labels(path, len(arrays["fake"]))
    for k, a in arrays.items():
        finite = np.isfinite(a).all(axis=1)
        if not finite.all():
            notes.append(f"{path.name}: {int((~finite).sum())} non-finite point(s) of '{k}' left out of the picture")
            arrays[k] = a[finite]
            if k == "fake" and labels is not None:
                labels = (labels[0], labels[1][finite])
    if labels is not None:
        arrays[labels[0]] = labels[1]
    return arrays


def _as_images(fake: np.ndarray | None) -> np.ndarray | None:
    """Generated samples as (n, h, w) grey images: one-channel (n, 1, h, w) arrays, or flat rows
    whose width is a square of at least 16 pixels (8x8 digits: 64); None for anything else."""
    if fake is None or len(fake) == 0 or not np.isfinite(fake).all():
        return None
    if fake.ndim == 4 and fake.shape[1] == 1:
        return fake[:, 0]
    side = round(fake.shape[1] ** 0.5) if fake.ndim == 2 else 0
    return fake.reshape(len(fake), side, side) if side >= 4 and side * side == fake.shape[1] else None


def _condition_labels(path: Path, n: int) -> tuple[str, np.ndarray] | None:
    """The class labels a conditional generator's samples were asked for (the first integer field
    saved with them, one per sample), to colour the samples by; None when there are none."""
    try:
        with np.load(path, allow_pickle=False) as data:
            for k in sorted(data.files):
                if k.startswith(FIELD_PREFIX):
                    a = np.asarray(data[k])
                    if a.ndim == 1 and a.dtype.kind in "iu" and len(a) == n:
                        return k, a.astype(np.int64)
    except Exception:  # the samples were read; a broken field only loses the colours
        return None
    return None


def draw_samples(run: Run) -> Figure | None:
    """The picture of ``run.samples`` (as :func:`read_samples` returns them); None without samples."""
    if run.samples is None:
        return None
    fig = new_figure(6, 6)
    ax = fig.add_subplot()
    s = run.samples
    if "images" in s:
        _draw_image_grid(ax, run, s["images"])
        return fig
    if "real" in s:
        ax.scatter(s["real"][:, 0], s["real"][:, 1], s=6, color="0.6", alpha=0.5, label=f"real data ({len(s['real'])})")
    cond = next((k for k in s if k.startswith(FIELD_PREFIX)), None)
    if cond is None:
        ax.scatter(s["fake"][:, 0], s["fake"][:, 1], s=8, color="C3", alpha=0.6, label=f"generated ({len(s['fake'])})")
    else:  # a conditional generator: each sample coloured by the class it was asked for
        labels = s[cond]
        ax.scatter(
            s["fake"][:, 0],
            s["fake"][:, 1],
            s=8,
            c=labels % 20,
            cmap="tab10" if labels.max(initial=0) < 10 else "tab20",
            vmin=0,
            vmax=9 if labels.max(initial=0) < 10 else 19,
            alpha=0.6,
            label=f"generated ({len(s['fake'])}), by {cond.removeprefix(FIELD_PREFIX)}",
        )
    if "centres" in s:
        c = s["centres"]
        ax.scatter(
            c[:, 0],
            c[:, 1],
            s=120,
            marker="X",
            color="black",
            edgecolors="white",
            linewidths=1,
            label=f"mode centres ({len(c)})",
        )
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(run_title(run, "generated samples over the real data"), fontsize=12)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=9, markerscale=1.5)
    return fig


def _draw_image_grid(ax: Any, run: Run, images: np.ndarray) -> None:
    n, h, w = min(100, len(images)), images.shape[1], images.shape[2]
    rows = -(-n // 10)
    lo, hi = float(images.min()), float(images.max())
    tiles = np.full((rows * (h + 1) + 1, 10 * (w + 1) + 1), lo + 0.3 * (hi - lo))  # grey frames
    for i in range(n):
        r, c = divmod(i, 10)
        tiles[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = images[i]
    ax.imshow(tiles, cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(run_title(run, f"the first {n} of {len(images)} generated samples"), fontsize=12)
