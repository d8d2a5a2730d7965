"""Score a digits GAN's samples with the digits_cnn classifier: ``python -m benchmarks.digits_gan_score
GAN_RUN_DIR CNN_RUN_DIR [--png grid.png] [--json]``.

GAN_RUN_DIR is a finished run of specs/dcgan_digits.yaml (its ``samples.npz``: n flat 8x8 images,
pixels in [0, 1]); CNN_RUN_DIR a finished run of specs/digits_cnn.yaml (its
``checkpoints/last.npz``). The classifier is compiled from specs/digits_cnn.yaml through
onlytorch's Python API, its weights restored, and it classifies the samples under no_grad (eval
mode: no dropout). Reported: the share of samples classified with confidence (top softmax
probability) >= 0.9, and how many of the 10 classes appear among those confident samples. A
blurry average of digits, or noise, is classified with low confidence; a generator that
collapsed onto one digit covers one class.

``--png`` draws the first 100 samples as a 10x10 grid (needs matplotlib: the ``plot`` extra).
Example tooling, not part of the library's import path."""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

import onlytorch.checkpoint as ckpt
from onlytorch.compile import compile_file
from onlytorch.train import Trainer

CONFIDENT = 0.9


CNN_SPEC = pathlib.Path(__file__).resolve().parent.parent / "specs" / "digits_cnn.yaml"


def load_classifier(cnn_run: pathlib.Path, spec: pathlib.Path = CNN_SPEC) -> tuple[Trainer, str]:
    """The digits_cnn classifier (specs/digits_cnn.yaml) with the weights of a finished run's last
    checkpoint, and the name of its logits node."""
    compiled, report = compile_file(spec)
    if compiled is None:
        raise SystemExit(f"{spec}: does not compile: {report.items}")
    # no data: only the weights and the graph are needed, never the training set
    trainer = Trainer(compiled, data={})
    trainer.restore_weights(ckpt.load(cnn_run / "checkpoints" / "last.npz"))
    return trainer, "logits"


def classify(trainer: Trainer, logits: str, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Softmax probabilities (n, 10) of flat 8x8 images (n, 64), under no_grad and eval mode."""
    g = trainer.g
    out = []
    with g.no_grad():
        for i in range(0, len(images), batch):
            g.set_value("x", np.asarray(images[i : i + batch], dtype=g.dtype))
            z = np.asarray(g.forward_node(trainer.c.names[logits]), dtype=np.float64)
            z = np.exp(z - z.max(axis=1, keepdims=True))
            out.append(z / z.sum(axis=1, keepdims=True))
    return np.concatenate(out)


def score(probs: np.ndarray, confident: float = CONFIDENT) -> dict[str, Any]:
    """The share of samples classified with confidence >= ``confident``, and the number of
    distinct classes among them."""
    top = probs.max(axis=1)
    sure = top >= confident
    classes = np.unique(probs.argmax(axis=1)[sure])
    counts = np.bincount(probs.argmax(axis=1)[sure], minlength=probs.shape[1])
    return {
        "n": len(probs),
        "confident_share": float(sure.mean()),
        "classes_covered": len(classes),
        "per_class": [int(c) for c in counts],
    }


def read_samples(gan_run: pathlib.Path) -> np.ndarray:
    with np.load(gan_run / "samples.npz", allow_pickle=False) as z:
        fake = np.asarray(z["fake"], dtype=np.float64)
    return fake.reshape(len(fake), -1)


def draw_grid(images: np.ndarray, path: pathlib.Path, title: str = "") -> None:
    """The first 100 images (flat 8x8) as a 10x10 grey grid in a PNG."""
    import matplotlib  # lazily: the plot extra is optional

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(100, len(images))
    rows = int(np.ceil(n / 10))
    tiles = np.full((rows * 9 + 1, 10 * 9 + 1), 0.3)  # a one-pixel grey frame around each image
    for i in range(n):
        r, c = divmod(i, 10)
        tiles[1 + r * 9 : 1 + r * 9 + 8, 1 + c * 9 : 1 + c * 9 + 8] = images[i].reshape(8, 8)
    fig = plt.figure(figsize=(6, 6 * tiles.shape[0] / tiles.shape[1] + 0.4))
    ax = fig.add_subplot()
    ax.imshow(tiles, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def score_run(gan_run: pathlib.Path, cnn_run: pathlib.Path) -> dict[str, Any]:
    trainer, logits = load_classifier(cnn_run)
    return score(classify(trainer, logits, read_samples(gan_run)))


def main(argv: list[str] | None = None) -> Mapping[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gan_run", type=pathlib.Path)
    ap.add_argument("cnn_run", type=pathlib.Path)
    ap.add_argument("--png", type=pathlib.Path, help="write a 10x10 grid of the first 100 samples")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    result = score_run(a.gan_run, a.cnn_run)
    if a.png:
        text = f"{result['confident_share']:.1%} confident, {result['classes_covered']}/10 classes"
        draw_grid(read_samples(a.gan_run), a.png, f"{a.gan_run.name}: {text}")
    if a.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['n']} samples: {result['confident_share']:.1%} classified with confidence >= {CONFIDENT}, "
            f"{result['classes_covered']}/10 classes among them (per class {result['per_class']})"
        )
    return result


if __name__ == "__main__":
    main()
