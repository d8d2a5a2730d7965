"""Example specs whose ``init:`` loads a checkpoint of another run: specs/distill_digits.yaml
loads the teacher that specs/digits_teacher.yaml trains into runs/digits_teacher, which a fresh
clone (and the test suite) does not have. The tests that compile, draw or train every example give
such a spec a teacher trained here at reduced length (once per test process, in a temporary
folder) with ``--set init.N.checkpoint=PATH``; every other spec gets no override."""

from __future__ import annotations

import atexit
import functools
import pathlib
import shutil
import tempfile

SPECS = pathlib.Path(__file__).resolve().parent.parent / "specs"

# example -> (the --set key of its init checkpoint, the example that trains it, steps to train it here)
TEACHERS = {"distill_digits": ("init.0.checkpoint", "digits_teacher", 30)}


def _stem(path: str | pathlib.Path) -> str:
    return pathlib.Path(path).stem


@functools.cache
def teacher_checkpoint(stem: str) -> pathlib.Path:
    """The checkpoint the example ``stem`` loads, trained now (the teacher spec, reduced length)."""
    from onlytorch import fit

    _, teacher, steps = TEACHERS[stem]
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"onlytorch-{teacher}-"))
    atexit.register(shutil.rmtree, folder, True)
    result = fit(SPECS / f"{teacher}.yaml", folder / "run", overrides=[f"train.steps={steps}"])
    assert result.ok, result.message
    return folder / "run" / "checkpoints" / "best.npz"


def example_overrides(path: str | pathlib.Path) -> list[tuple[str, str]]:
    """The (key, value) overrides ``compile_file`` needs for the example at path (none for most)."""
    stem = _stem(path)
    if stem not in TEACHERS:
        return []
    return [(TEACHERS[stem][0], str(teacher_checkpoint(stem)))]


def example_sets(path: str | pathlib.Path) -> list[str]:
    """The same as command-line arguments: ``["--set", "KEY=VALUE", ...]``."""
    return [arg for key, value in example_overrides(path) for arg in ("--set", f"{key}={value}")]


def example_in_place(path: str | pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    """For commands without ``--set`` (validate, graph): the example and the flags to add. An
    example with a teacher is copied into the layout its header shows (a clone whose
    runs/TEACHER/checkpoints/best.npz is there), which it reads with ``--allow-outside``."""
    stem = _stem(path)
    if stem not in TEACHERS:
        return pathlib.Path(path), []
    teacher = TEACHERS[stem][1]
    clone = pathlib.Path(tempfile.mkdtemp(prefix=f"onlytorch-{stem}-"))
    atexit.register(shutil.rmtree, clone, True)
    (clone / "specs").mkdir()
    shutil.copy(path, clone / "specs")
    (clone / "runs" / teacher / "checkpoints").mkdir(parents=True)
    shutil.copy(teacher_checkpoint(stem), clone / "runs" / teacher / "checkpoints" / "best.npz")
    return clone / "specs" / pathlib.Path(path).name, ["--allow-outside"]
