"""Data for training: sources with declared fields (generators, files, bundled sets, the gym
sources in onlytorch.data.gym) and batchers.

Importing this package registers every source in SOURCES.
"""

from . import bundled, files, gym, synthetic  # noqa: F401  (registration)
from .batches import Batches, Noise, rng_from_array, rng_to_array
from .sources import (
    SOURCES,
    DataError,
    Field,
    FieldRow,
    FieldTable,
    Held,
    LiveData,
    LiveSource,
    LoadContext,
    Params,
    Source,
    check_arrays,
    get_source,
    load_source,
    register,
    source_fields,
    split,
    unregister,
)
from .synthetic import grid_centres, ring_centres

__all__ = [
    "SOURCES",
    "Batches",
    "DataError",
    "Field",
    "FieldRow",
    "FieldTable",
    "Held",
    "LiveData",
    "LiveSource",
    "LoadContext",
    "Noise",
    "Params",
    "Source",
    "check_arrays",
    "get_source",
    "grid_centres",
    "load_source",
    "register",
    "ring_centres",
    "rng_from_array",
    "rng_to_array",
    "source_fields",
    "split",
    "unregister",
]
