"""scikit-learn's bundled small real data sets (they ship inside the package: no network).

scikit-learn is the optional extra `datasets`: only `load` imports it, so that a spec using these
sets validates (its fields are known here) on an installation without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import Field as Param

from .sources import DataError, FieldRow, FieldTable, LoadContext, Params, Source, register


class DigitsParams(Params):
    pass


class TableParams(Params):
    standardize: bool = Param(
        True,
        description="scale each feature to mean 0, std 1 (statistics of the whole set, a simplification: "
        "they are not held out from a later validation split)",
    )


@dataclass(frozen=True)
class _Set:
    name: str  # also the loader: sklearn.datasets.load_<name>
    features: int
    classes: int
    samples: int
    doc: str


_SETS = [
    _Set("digits", 64, 10, 1797, "8x8 images of handwritten digits (1797), pixels scaled to [0, 1]"),
    _Set("iris", 4, 3, 150, "iris flowers (150): 4 measurements, 3 species"),
    _Set("breast_cancer", 30, 2, 569, "breast cancer diagnosis (569): 30 features, malignant (0) or benign (1)"),
    _Set("wine", 13, 3, 178, "wines (178): 13 chemical measurements, 3 cultivars"),
]


def _loader(s: _Set) -> Callable[[Params, LoadContext], dict[str, np.ndarray]]:
    def load(p: Params, ctx: LoadContext) -> dict[str, np.ndarray]:
        try:
            datasets = importlib.import_module("sklearn.datasets")
        except ImportError:
            raise DataError(f"sklearn.{s.name} needs scikit-learn: pip install 'onlytorch[datasets]'") from None
        x, y = getattr(datasets, f"load_{s.name}")(return_X_y=True)
        x = np.asarray(x, dtype=np.float64)
        if isinstance(p, DigitsParams):
            x = x / 16.0
        elif isinstance(p, TableParams) and p.standardize:
            std = x.std(axis=0)
            x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
        return {"x": x, "y": np.asarray(y, dtype=np.int64)}

    return load


def _fields(s: _Set) -> FieldTable:
    feature_doc = "pixel intensities in [0, 1]" if s.name == "digits" else "features (standardised by default)"
    return FieldTable(
        (
            FieldRow("x", "float", (s.features,), feature_doc),
            FieldRow("y", "int64", (), "the class label", classes=s.classes),
        )
    )


def _count(s: _Set) -> Callable[[Params], int]:
    return lambda p: s.samples


for _s in _SETS:
    register(
        Source(
            name=f"sklearn.{_s.name}",
            params=DigitsParams if _s.name == "digits" else TableParams,
            fields=_fields(_s),
            load=_loader(_s),
            doc=f"scikit-learn's {_s.doc}.",
            extra="datasets",
            samples=_count(_s),
        )
    )
