"""The Optuna side of a sweep: its storage (a journal file in the sweep directory, or an RDB URL
shared by several machines), its study (named after the sweep), and the sampler and pruner the
sweep file declares. Optuna is imported here, inside the functions, never when onlytorch is."""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from .load import Sweep

JOURNAL = "study.log"


class StorageError(Exception):
    """The study's storage cannot be opened or used (a bad URL, an unreachable database, a
    journal that cannot be written); the message says which and why."""


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for what is written or printed."""
    return re.sub(r"^([a-zA-Z0-9+.-]+://[^:/@]*):[^@]*@", r"\1:***@", url)


def storage_record(storage: str | None) -> dict[str, str]:
    """sweep.json's description of a storage (no password in it)."""
    if storage is None:
        return {"kind": "journal", "path": JOURNAL}
    return {"kind": "rdb", "url": redact(storage)}


def make_storage(sweep_dir: str | pathlib.Path, storage: str | None) -> Any:
    """The Optuna storage: the journal file SWEEP_DIR/study.log (safe for the processes of one
    machine: the backend locks the file for each write), or the RDB at ``storage``."""
    import optuna

    try:
        if storage is None:
            from optuna.storages.journal import JournalFileBackend

            path = pathlib.Path(sweep_dir) / JOURNAL
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        return _rdb(storage)
    except ImportError as e:
        raise StorageError(f"cannot use the storage {redact(storage or JOURNAL)}: {e}") from None
    except Exception as e:  # sqlalchemy's errors (bad URL, unreachable server) and OSError
        where = redact(storage) if storage is not None else str(pathlib.Path(sweep_dir) / JOURNAL)
        raise StorageError(f"cannot open the study storage {where}: {_first_line(e)}") from None


def _rdb(url: str, attempts: int = 5) -> Any:
    """An RDBStorage. Processes that open a new database at the same moment race to create its
    tables (one wins, the others see a duplicate row or table): those try again, and find them."""
    import time

    import optuna

    # a shared database is written by many processes at once: an SQLite file needs a patient
    # lock wait rather than failing a worker on the first "database is locked"
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except ImportError:
            raise
        except Exception as e:
            text = str(e).lower()
            racing = any(k in text for k in ("unique constraint", "already exists", "duplicate", "locked"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def create_study(sweep_dir: str | pathlib.Path, storage: str | None, sweep: Sweep) -> optuna.Study:
    """The sweep's study, created at the first run and loaded by every later one (and by every
    worker); StorageError when the storage cannot be used or holds a study of this name with
    another direction."""
    import optuna

    store = make_storage(sweep_dir, storage)
    try:
        study = optuna.create_study(
            study_name=sweep.name, storage=store, direction=sweep.direction, load_if_exists=True
        )
    except Exception as e:
        raise StorageError(f"cannot create the study {sweep.name!r}: {_first_line(e)}") from None
    have = study.direction.name.lower()
    if have != sweep.direction:
        raise StorageError(
            f"the storage holds a study {sweep.name!r} that is to {have}, but this sweep is to {sweep.direction}; "
            "give the sweep another name or use another storage"
        )
    return study


def load_study(store: Any, name: str, sampler: Any = None, pruner: Any = None) -> optuna.Study:
    """An existing study in ``store`` (make_storage's), with a worker's own sampler and pruner."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=store, sampler=sampler, pruner=pruner)
    except Exception as e:
        raise StorageError(f"cannot load the study {name!r}: {_first_line(e)}") from None


def open_study(sweep_dir: str | pathlib.Path, storage: str | None = None) -> optuna.Study:
    """The study sweep.json names (for the report and for looking at a sweep from Python). An RDB
    storage's URL is recorded without its password: pass ``storage`` to give it in full."""
    from .record import SWEEP_JSON

    path = pathlib.Path(sweep_dir)
    info = json.loads((path / SWEEP_JSON).read_text(encoding="utf-8"))  # OSError, ValueError
    record = info.get("storage") or {"kind": "journal", "path": JOURNAL}
    if storage is None and record.get("kind") == "rdb":
        storage = str(record["url"])
        if "***" in storage:
            raise StorageError(f"{path / SWEEP_JSON} records the storage without its password: pass storage=URL")
    return load_study(make_storage(path, storage), str(info["study_name"]))


def worker_seed(seed: int, index: int, trials_at_start: int) -> int:
    """A sampler seed per worker: parallel workers (and a continued sweep) must not draw the same
    sequence of configurations, and one worker of a fresh study must draw the same every time."""
    digest = hashlib.sha256(f"{seed}/{index}/{trials_at_start}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(sweep: Sweep, index: int, trials_at_start: int) -> Any:
    """The sweep's sampler for worker ``index`` (sweep.sampler: type + options)."""
    import optuna

    from . import space

    options = {k: v for k, v in sweep.sampler.items() if v is not None}
    kind = options.pop("type", "tpe")
    seed = worker_seed(int(options.pop("seed", 0) or 0), index, trials_at_start)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid_space(sweep.params), seed=seed)
    if kind == "cmaes":
        kwargs = {k: v for k, v in options.items() if k in ("n_startup_trials", "sigma0", "popsize")}
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **kwargs)
    kwargs = {k: v for k, v in options.items() if k in ("n_startup_trials", "multivariate")}
    return optuna.samplers.TPESampler(seed=seed, **kwargs)


def make_pruner(sweep: Sweep) -> Any:
    """The sweep's pruner (sweep.pruner: type + options). Steps are training steps, offset by
    the seed's index times the steps of one run (see trial.py)."""
    import optuna

    options = {k: v for k, v in sweep.pruner.items() if v is not None}
    kind = options.pop("type", "none")
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(options.get("startup_trials", 5)),
            n_warmup_steps=int(options.get("warmup_steps", 0)),
        )
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=options.get("min_resource", "auto"),
            reduction_factor=int(options.get("reduction_factor", 4)),
        )
    return optuna.pruners.NopPruner()
