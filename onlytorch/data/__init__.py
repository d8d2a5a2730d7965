"""Data for training: sources with declared fields (generators, files, bundled sets) and batchers.

Importing this package registers every source in SOURCES.
"""

from . import bundled, files, replay, rollout, synthetic  # noqa: F401  (registration)
from .batches import Batches, Noise, rng_from_array, rng_to_array
from .sources import (
    SOURCES,
    DataError,
    Field,
    LoadContext,
    Source,
    check_arrays,
    get_source,
    load_source,
    source_fields,
    split,
)
from .synthetic import grid_centres, ring_centres

__all__ = [
    "SOURCES",
    "Batches",
    "DataError",
    "Field",
    "LoadContext",
    "Noise",
    "Source",
    "check_arrays",
    "get_source",
    "grid_centres",
    "load_source",
    "ring_centres",
    "rng_from_array",
    "rng_to_array",
    "source_fields",
    "split",
]
