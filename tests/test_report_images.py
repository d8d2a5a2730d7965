"""``onlytorch report`` draws image samples (flat square rows such as 8x8 digits, or one-channel
(n, 1, h, w) arrays) as a grid of pictures; other shapes than (n, 2) points or images stay a note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onlytorch import report
from tests.test_report import make_run


@pytest.mark.parametrize("shape", [(30, 64), (30, 1, 8, 8), (12, 1, 5, 7)])
def test_image_samples_are_read_as_images(tmp_path: Path, shape: tuple[int, ...]) -> None:
    run_dir = make_run(tmp_path)
    fake = np.random.default_rng(0).uniform(0, 1, shape)
    np.savez(run_dir / "samples.npz", fake=fake, real=fake)
    run = report.read_run(run_dir)
    assert run.samples is not None and set(run.samples) == {"images"}
    images = run.samples["images"]
    assert images.shape == (shape[0], *(shape[2:] if len(shape) == 4 else (8, 8)))
    np.testing.assert_array_equal(images.reshape(len(images), -1), fake.reshape(len(fake), -1))


@pytest.mark.parametrize("shape", [(5, 3), (5, 9), (5, 2, 4, 4)])
def test_other_shapes_are_a_note(tmp_path: Path, shape: tuple[int, ...]) -> None:
    run_dir = make_run(tmp_path)
    np.savez(run_dir / "samples.npz", fake=np.zeros(shape))
    run = report.read_run(run_dir)
    assert run.samples is None and any("samples.npz" in n for n in run.notes)


def test_the_grid_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run_dir = make_run(tmp_path)
    digits = np.zeros((120, 64))
    digits[:, 10:50] = 1.0
    np.savez(run_dir / "samples.npz", fake=digits)
    written = report.write_plots(report.read_run(run_dir), tmp_path / "out")
    assert tmp_path / "out" / "samples.png" in written
    assert (tmp_path / "out" / "samples.png").stat().st_size > 1000
