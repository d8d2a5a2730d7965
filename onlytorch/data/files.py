"""Data from the user's files: .npz archives and .csv tables.

Relative paths resolve against the spec's folder: `Source.parse(params, base_dir)` makes them
absolute, and `load` resolves what is still relative against `LoadContext.base_dir`. `fields`
reads only what it must (an archive's array headers, a table's header row), never the data.
Every problem is a DataError naming the file; .npz files are read with allow_pickle=False.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import Field as Param
from pydantic import ValidationInfo, field_validator, model_validator

from .sources import DataError, Field, FieldDtype, LoadContext, Params, Source, common_length, did_you_mean, register


class FileParams(Params):
    path: Path = Param(description="the file; a relative path is relative to the spec's folder")

    @field_validator("path")
    @classmethod
    def _resolve(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        v = v.expanduser()
        return Path(base, v).absolute() if base is not None else v


def _file(p: FileParams, base_dir: Path | None = None) -> Path:
    return (Path(base_dir, p.path) if base_dir is not None else p.path).absolute()


# ---------------------------------------------------------------- .npz

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NpzParams(FileParams):
    keys: list[str] | dict[str, str] | None = Param(
        None,
        description="which arrays become fields: a list of array names, or {field: array name} to rename; "
        "default: every array in the file",
    )


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every array's shape and dtype, read from the .npy headers inside the archive."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"file.npz: no such file: {path}", param="path") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"file.npz: cannot read {path} as an .npz archive: {e}", param="path") from None
    headers = {}
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            try:
                with archive.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    shape, _, dtype = _HEADER_READERS[version](fp)
            except (KeyError, ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
                raise DataError(f"file.npz: {path}: array {name!r} has an unreadable header: {e}") from None
            headers[name] = (tuple(shape), dtype)
    if not headers:
        raise DataError(f"file.npz: {path} holds no arrays")
    return headers


def _field_dtype(path: Path, name: str, dtype: np.dtype) -> FieldDtype:
    if dtype.hasobject:
        raise DataError(
            f"file.npz: {path}: array {name!r} holds Python objects, which need pickle; "
            "refused (files are read with allow_pickle=False): save plain numeric arrays"
        )
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return "int64"
    if np.issubdtype(dtype, np.floating):
        return "float"
    raise DataError(f"file.npz: {path}: array {name!r} has dtype {dtype}; fields must be integer or float arrays")


def _npz_selection(p: NpzParams, path: Path) -> tuple[dict[str, str], dict[str, Field]]:
    """{field: array name} and the fields, from the archive's headers."""
    headers = _npz_headers(path)
    keys = p.keys if p.keys is not None else list(headers)
    chosen = dict(zip(keys, keys)) if isinstance(keys, list) else dict(keys)
    for array in chosen.values():
        if array not in headers:
            hint = did_you_mean(array, headers) or f" (it holds: {', '.join(headers)})"
            raise DataError(f"file.npz: {path} has no array {array!r}{hint}", param="keys")
    common_length({f: headers[a][0] for f, a in chosen.items()}, f"file.npz: {path}")
    fields = {
        f: Field(headers[a][0][1:], _field_dtype(path, a, headers[a][1]), f"array {a!r} of {path.name}")
        for f, a in chosen.items()
    }
    return chosen, fields


def _npz_load(p: NpzParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    path = _file(p, ctx.base_dir)
    chosen, fields = _npz_selection(p, path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {f: archive[a] for f, a in chosen.items()}
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(f"file.npz: cannot read {path}: {e}") from None
    return {f: a.astype(np.int64) if fields[f].dtype == "int64" else a for f, a in arrays.items()}


register(
    Source(
        name="file.npz",
        params=NpzParams,
        fields=lambda p: _npz_selection(p, _file(p))[1],
        load=_npz_load,
        doc="Arrays from a .npz archive (np.savez): integer arrays become int64 fields, float arrays float fields; "
        "all must share the first (sample) dimension.",
    )
)


# ---------------------------------------------------------------- .csv

Column = str | int


class CsvParams(FileParams):
    columns: dict[str, Column | list[Column]] = Param(
        description="{field: columns}: a list of column names or 0-based indices gives a field of shape (k,); "
        "a single column gives shape ()"
    )
    header: bool = Param(True, description="the first row names the columns")
    delimiter: str = Param(",", min_length=1, max_length=1, description="the character between cells")
    int_fields: list[str] = Param([], description="fields read as int64 (labels); the others are float")

    @model_validator(mode="after")
    def _consistent(self) -> CsvParams:
        if not self.columns:
            raise ValueError("columns: name at least one field")
        for field, cols in self.columns.items():
            for c in cols if isinstance(cols, list) else [cols]:
                if isinstance(c, int) and c < 0:
                    raise ValueError(f"columns.{field}: column index {c} is negative")
                if isinstance(c, str) and not self.header:
                    raise ValueError(f"columns.{field}: column {c!r} is a name, but header is false: use indices")
            if cols == []:
                raise ValueError(f"columns.{field}: lists no column")
        for f in self.int_fields:
            if f not in self.columns:
                raise ValueError(f"int_fields: {f!r} is not a field of columns{did_you_mean(f, self.columns)}")
        return self


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            for row in reader:
                if row:
                    yield reader.line_num, row
    except FileNotFoundError:
        raise DataError(f"file.csv: no such file: {path}", param="path") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"file.csv: cannot read {path}: {e}", param="path") from None


def _csv_columns(p: CsvParams, path: Path, first: list[str]) -> dict[str, list[int]]:
    """Each field's column indices, checked against the first row (the header, or the first data row)."""
    first = [name.strip() for name in first]
    indices: dict[str, list[int]] = {}
    for field, cols in p.columns.items():
        indices[field] = []
        for c in cols if isinstance(cols, list) else [cols]:
            if isinstance(c, str) and c not in first:
                hint = did_you_mean(c, first) or f" (columns: {', '.join(first)})"
                raise DataError(f"file.csv: {path} has no column {c!r}{hint}", param="columns")
            if isinstance(c, int) and c >= len(first):
                raise DataError(
                    f"file.csv: {path} has {len(first)} columns; index {c} is out of range", param="columns"
                )
            indices[field].append(first.index(c) if isinstance(c, str) else c)
    return indices


def _csv_fields(p: CsvParams) -> dict[str, Field]:
    path = _file(p)
    first = next(iter(_csv_rows(path, p.delimiter)), None)
    if first is None:
        raise DataError(f"file.csv: {path} is empty")
    _csv_columns(p, path, first[1])
    return {
        field: Field(
            (len(cols),) if isinstance(cols, list) else (),
            "int64" if field in p.int_fields else "float",
            f"column(s) {cols} of {path.name}",
        )
        for field, cols in p.columns.items()
    }


def _csv_load(p: CsvParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    path = _file(p, ctx.base_dir)
    rows = list(_csv_rows(path, p.delimiter))
    if not rows:
        raise DataError(f"file.csv: {path} is empty")
    indices = _csv_columns(p, path, rows[0][1])
    header = [c.strip() for c in rows[0][1]] if p.header else None
    data = rows[1:] if p.header else rows
    if not data:
        raise DataError(f"file.csv: {path} has a header but no data rows")
    needed = max(i for cols in indices.values() for i in cols)
    for line, cells in data:
        if len(cells) <= needed:
            raise DataError(
                f"file.csv: {path}: line {line} has {len(cells)} cells; {_column(header, needed)} is missing"
            )
    arrays = {}
    for field, cols in indices.items():
        integral = field in p.int_fields
        table = [[cells[i] for i in cols] for _, cells in data]
        try:
            values = np.array(table, dtype=str).astype(np.float64)
        except ValueError:  # find and name the bad cell
            values = np.array([[_cell(path, header, line, cells, i, integral) for i in cols] for line, cells in data])
        if integral:
            bad = ~(np.isfinite(values) & (values == np.round(values)))
            if bad.any():
                r, c = np.argwhere(bad)[0]
                line, cells = data[r]
                _cell(path, header, line, cells, cols[c], integral)
            values = values.astype(np.int64)
        arrays[field] = values if isinstance(p.columns[field], list) else values[:, 0]
    return arrays


def _column(header: list[str] | None, i: int) -> str:
    return f"column {header[i]!r}" if header is not None else f"column {i}"


def _cell(path: Path, header: list[str] | None, line: int, cells: list[str], i: int, integral: bool) -> float:
    """One cell's value; a DataError naming its line and column when it is not a number (an integer)."""
    try:
        v = float(cells[i])
    except ValueError:
        v = None
    if v is None or (integral and not v.is_integer()):
        what = "an integer" if integral else "a number"
        raise DataError(f"file.csv: {path}: line {line}, {_column(header, i)}: {cells[i]!r} is not {what}")
    return v


register(
    Source(
        name="file.csv",
        params=CsvParams,
        fields=_csv_fields,
        load=_csv_load,
        doc="Numeric columns of a .csv table, grouped into fields; int_fields are read as int64 labels.",
    )
)
