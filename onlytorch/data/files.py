"""Data from the user's files: .npz archives and .csv tables.

Relative paths resolve against the spec's folder: `Source.parse(params, base_dir)` makes them
absolute, and `load` resolves what is still relative against `LoadContext.base_dir`. `fields`
reads an archive's array headers, never its arrays, and checks a table's rows without keeping them
(what loading would refuse is refused when the spec is validated, at the data entry).
Every problem is a DataError naming the file; .npz files are read with allow_pickle=False.

A spec may come from someone else, so (docs/inputs.md): only regular files are read (a FIFO
would block), within size bounds checked before reading (an .npz by its zip directory and
.npy headers, never by unpacking it); inside ``confined_to`` (how a spec file is compiled) a
path must stay inside the spec's folder; and a message quotes at most a short escaped excerpt
of what a file holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from pydantic import Field as Param
from pydantic import ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..safe_files import (
    MAX_CSV_BYTES,
    MAX_DATA_BYTES,
    MAX_NPZ_ARRAYS,
    NotAnArchive,
    NpyHeader,
    RefusedFile,
    expand_user,
    human_size,
    npz_headers,
    open_regular,
    short_repr,
)
from ..suggest import did_you_mean_suffix
from .sources import (
    DataError,
    Field,
    FieldDtype,
    FieldRow,
    FieldTable,
    LoadContext,
    Params,
    Source,
    common_length,
    register,
)

# (the folder data paths must stay in, the paths given on the command line, which may go anywhere)
MAX_INT = 2**53  # an integer label read from a table: exact as a float64, far from int64's wrap-around
_CONFINED: contextvars.ContextVar[tuple[Path, frozenset[Path]] | None] = contextvars.ContextVar(
    "onlytorch_data_root", default=None
)


@contextlib.contextmanager
def confined_to(root: Path | None, trusted: Iterable[str | Path] = ()) -> Iterator[None]:
    """While active, a file path that a data source's parameters are validated with (with a base_dir)
    must lie inside ``root`` once ``..`` and symbolic links are resolved; paths in ``trusted`` (given on
    the command line with --set) are exempt, and ``root=None`` confines nothing (--allow-outside)."""
    paths: set[Path] = set()
    for t in trusted:
        if "\0" not in str(t):
            paths.add(Path(t))
            with contextlib.suppress(RuntimeError):  # ~user with no home: its own check refuses it
                paths.add(Path(t).expanduser())  # the spec's validation expands ~ before this check sees it
    token = _CONFINED.set(None if root is None else (Path(root).resolve(), frozenset(paths)))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def outside_problem(given: Path, resolved: Path, what: str = "data paths") -> str | None:
    """Why the file at ``resolved`` (written ``given`` in the spec) may not be read under the active
    ``confined_to``, or None: the one rule for every path a spec names (data files, init checkpoints)."""
    return _outside(given, resolved, what)


def _outside(given: Path, resolved: Path, what: str = "data paths") -> str | None:
    confined = _CONFINED.get()
    if confined is None or given in confined[1]:
        return None
    root = confined[0]
    try:
        target = resolved.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        return f"cannot resolve {short_repr(str(given), 300)}: {e}"
    if target.is_relative_to(root):
        return None
    via = f" (it resolves to {target})" if target != Path(resolved) else ""
    return (
        f"{short_repr(str(given), 300)} is outside the spec's folder {root}{via}: a spec's {what} stay inside "
        "its folder (see docs/inputs.md); pass --allow-outside to read it, or give the path with --set"
    )


class FileParams(Params):
    path: Path = Param(
        description="the file; a relative path is relative to the spec's folder, and must stay inside it "
        "(see docs/inputs.md)"
    )

    @field_validator("path")
    @classmethod
    def _resolve(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        try:
            expanded = expand_user(v, "the path")
        except RefusedFile as e:
            raise PydanticCustomError("data_path", "{problem}", {"problem": e.reason}) from None
        if base is None:
            return expanded
        resolved = Path(base, expanded).absolute()
        problem = _outside(v, resolved)
        if problem:  # a custom error: pydantic would put "Value error, " before a ValueError's message
            raise PydanticCustomError("data_path", "{problem}", {"problem": problem})
        return resolved


def _file(p: FileParams, base_dir: Path | None = None) -> Path:
    return (Path(base_dir, p.path) if base_dir is not None else p.path).absolute()


def _open(path: Path, limit: int, source: str) -> io.BufferedReader:
    """The file opened for reading once it is known to be a regular file of at most ``limit`` bytes."""
    try:
        return open_regular(path, limit, "the data file")
    except FileNotFoundError:
        raise DataError(f"{source}: no such file: {path}", param="path") from None
    except RefusedFile as e:
        raise DataError(f"{source}: cannot read {path}: {e.reason} (see docs/inputs.md)", param="path") from None
    except OSError as e:
        raise DataError(f"{source}: cannot read {path}: {e.strerror or e}", param="path") from None


# ---------------------------------------------------------------- .npz


class NpzParams(FileParams):
    keys: list[str] | dict[str, str] | None = Param(
        None,
        description="which arrays become fields: a list of array names, or {field: array name} to rename; "
        "default: every array in the file",
    )


def _npz_headers(path: Path, fh: io.BufferedReader) -> dict[str, NpyHeader]:
    """Every array's header, read from the zip directory and the .npy headers inside the archive;
    refused when one would unpack past MAX_DATA_BYTES (also as int64, the type integer fields get)."""
    try:
        headers = npz_headers(fh, path, MAX_DATA_BYTES, "the data file", max_members=MAX_NPZ_ARRAYS)
    except NotAnArchive as e:
        raise DataError(f"file.npz: cannot read {path} as an .npz archive: {e.reason}", param="path") from None
    except RefusedFile as e:
        raise DataError(f"file.npz: {path}: {e.reason}", param="path") from None
    if not headers:
        raise DataError(f"file.npz: {path} holds no arrays")
    held = sum(
        h.nbytes // max(1, h.dtype.itemsize) * 8 if h.dtype.kind in "biu" else h.nbytes for h in headers.values()
    )
    if held > MAX_DATA_BYTES:
        raise DataError(
            f"file.npz: {path}: its arrays take {human_size(held)} in memory (integers as int64), "
            f"over the {human_size(MAX_DATA_BYTES)} limit for a data file (see docs/inputs.md)",
            param="path",
        )
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
    with _open(path, MAX_DATA_BYTES, "file.npz") as fh:
        headers = _npz_headers(path, fh)
    return _selection(p, path, headers)


def _selection(p: NpzParams, path: Path, headers: dict[str, NpyHeader]) -> tuple[dict[str, str], dict[str, Field]]:
    keys = p.keys if p.keys is not None else list(headers)
    chosen = dict(zip(keys, keys)) if isinstance(keys, list) else dict(keys)
    for array in chosen.values():
        if array not in headers:
            hint = did_you_mean_suffix(array, headers) or f" (it holds: {', '.join(map(short_repr, headers))})"
            raise DataError(f"file.npz: {path} has no array {short_repr(array)}{hint}", param="keys")
    common_length({f: headers[a].shape for f, a in chosen.items()}, f"file.npz: {path}")
    fields = {
        f: Field(headers[a].shape[1:], _field_dtype(path, a, headers[a].dtype), f"array {a!r} of {path.name}")
        for f, a in chosen.items()
    }
    return chosen, fields


def _npz_load(p: NpzParams, ctx: LoadContext) -> dict[str, np.ndarray]:
    path = _file(p, ctx.base_dir)
    # one open file for the headers and the arrays: what is checked is what is read
    with _open(path, MAX_DATA_BYTES, "file.npz") as fh:
        chosen, fields = _selection(p, path, _npz_headers(path, fh))
        fh.seek(0)
        try:
            with np.load(fh, allow_pickle=False) as archive:
                arrays = {f: archive[a] for f, a in chosen.items()}
        except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as e:
            raise DataError(f"file.npz: cannot read {path}: {e}") from None
    for f, a in arrays.items():
        if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:  # would wrap to negative
            raise DataError(
                f"file.npz: {path}: array {short_repr(chosen[f])} holds {int(a.max())}, past the int64 range of integer "
                "fields",
                param="path",
            )
    return {f: a.astype(np.int64) if fields[f].dtype == "int64" else a for f, a in arrays.items()}


register(
    Source(
        name="file.npz",
        params=NpzParams,
        fields=lambda p: _npz_selection(p, _file(p))[1],
        table=FieldTable(
            (
                FieldRow(
                    "KEY",
                    "int64 for an integer array, else float",
                    "the array's shape after its first (sample) axis",
                    "one field per array that keys names (under its own name, or the field name of a {field: array} "
                    "mapping); every array of the file by default",
                ),
            )
        ),
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
                raise ValueError(f"int_fields: {f!r} is not a field of columns{did_you_mean_suffix(f, self.columns)}")
        return self


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row; a NUL byte (which numpy's text arrays would
    silently drop, reading "3\\0" as 3) is an error naming its line."""
    raw = _open(path, MAX_CSV_BYTES, "file.csv")
    try:
        with io.TextIOWrapper(raw, newline="", encoding="utf-8-sig") as fh:  # -sig: a leading BOM is no cell
            reader = csv.reader(fh, delimiter=delimiter)
            for row in reader:
                bad = next((cell for cell in row if "\0" in cell), None)
                if bad is not None:
                    raise DataError(
                        f"file.csv: {path}: line {reader.line_num}: the cell {short_repr(bad)} holds a NUL byte",
                        param="path",
                    )
                if any(cell.strip() for cell in row):  # a blank or whitespace-only line is no row
                    yield reader.line_num, row
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"file.csv: cannot read {path}: {_reason(e)}", param="path") from None


def _reason(e: Exception) -> str:
    """An error's message without the text it may quote from the file (a UnicodeDecodeError quotes bytes)."""
    if isinstance(e, UnicodeDecodeError):
        return f"byte {e.object[e.start]:#04x} at offset {e.start} is not UTF-8 ({e.reason})"
    return str(e)[:200]


def _csv_columns(p: CsvParams, path: Path, first: list[str]) -> dict[str, list[int]]:
    """Each field's column indices, checked against the first row (the header, or the first data row)."""
    first = [name.strip() for name in first]
    indices: dict[str, list[int]] = {}
    for field, cols in p.columns.items():
        indices[field] = []
        for c in cols if isinstance(cols, list) else [cols]:
            if isinstance(c, str) and c not in first:
                shown = ", ".join(short_repr(name, 20) for name in first[:10]) + (", ..." if len(first) > 10 else "")
                hint = did_you_mean_suffix(c, first) or f" (columns: {shown})"
                raise DataError(f"file.csv: {path} has no column {short_repr(c)}{hint}", param="columns")
            if isinstance(c, int) and c >= len(first):
                raise DataError(
                    f"file.csv: {path} has {len(first)} columns; index {c} is out of range", param="columns"
                )
            indices[field].append(first.index(c) if isinstance(c, str) else c)
    return indices


def _refuse_nul(path: Path, delimiter: str) -> None:
    """Fields come from the header row alone, but a NUL byte anywhere is refused now, before training:
    numpy would silently read the cell "3\\0" as 3. A byte scan finds it; the rows then name the cell."""
    with _open(path, MAX_CSV_BYTES, "file.csv") as fh:
        if b"\0" not in fh.read():
            return
    for _ in _csv_rows(path, delimiter):
        pass


def _check_row(path: Path, width: int, line: int, cells: list[str]) -> None:
    """A data row has as many cells as the first row (a DataError naming the line otherwise)."""
    if len(cells) != width:
        raise DataError(
            f"file.csv: {path}: line {line} has {len(cells)} cells, the first row {width}: every row needs one "
            "cell per column",
            param="path",
        )


def _scan(p: CsvParams, path: Path, indices: dict[str, list[int]], rows: Iterable[tuple[int, list[str]]]) -> int:
    """Every data row checked (_check_row) and every cell a field reads parsed (_cell), without keeping
    them: what loading would refuse is refused when the spec is validated, at the data entry. Returns
    the number of data rows."""
    header: list[str] | None = None
    width = -1
    count = 0
    chunk: list[tuple[int, list[str]]] = []
    needed = max(i for cols in indices.values() for i in cols)
    for k, (line, cells) in enumerate(rows):
        if k == 0:
            width = len(cells)
            if p.header:
                header = [c.strip() for c in cells]
                continue
        if len(cells) <= needed:
            raise DataError(
                f"file.csv: {path}: line {line} has {len(cells)} cells; {_column(header, needed)} is missing",
                param="path",
            )
        _check_row(path, width, line, cells)
        chunk.append((line, cells))
        count += 1
        if len(chunk) == 65536:  # converted in chunks (numpy parses them), then dropped
            _convert(p, path, header, indices, chunk)
            chunk = []
    if chunk:
        _convert(p, path, header, indices, chunk)
    return count


def _csv_fields(p: CsvParams) -> dict[str, Field]:
    path = _file(p)
    _refuse_nul(path, p.delimiter)
    first = next(iter(_csv_rows(path, p.delimiter)), None)
    if first is None:
        raise DataError(f"file.csv: {path} is empty")
    indices = _csv_columns(p, path, first[1])
    if _scan(p, path, indices, _csv_rows(path, p.delimiter)) == 0:
        raise DataError(f"file.csv: {path} has a header but no data rows", param="path")
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
        _check_row(path, len(rows[0][1]), line, cells)
    return _convert(p, path, header, indices, data)


def _convert(
    p: CsvParams, path: Path, header: list[str] | None, indices: dict[str, list[int]], data: list[tuple[int, list[str]]]
) -> dict[str, np.ndarray]:
    """The fields' arrays from data rows; a DataError naming the first cell that is not a number (an
    integer of at most 2**53 in size for int_fields)."""
    arrays = {}
    for field, cols in indices.items():
        integral = field in p.int_fields
        table = [[cells[i] for i in cols] for _, cells in data]
        try:
            values = np.array(table, dtype=str).astype(np.float64)
        except ValueError:  # find and name the bad cell
            values = np.array([[_cell(path, header, line, cells, i, integral) for i in cols] for line, cells in data])
        if integral:
            bad = ~(np.isfinite(values) & (values == np.round(values)) & (np.abs(values) <= MAX_INT))
            if bad.any():
                r, c = np.argwhere(bad)[0]
                line, cells = data[r]
                _cell(path, header, line, cells, cols[c], integral)
            values = values.astype(np.int64)
        arrays[field] = values if isinstance(p.columns[field], list) else values[:, 0]
    return arrays


def _column(header: list[str] | None, i: int) -> str:
    return f"column {short_repr(header[i], 30)}" if header is not None else f"column {i}"


def _cell(path: Path, header: list[str] | None, line: int, cells: list[str], i: int, integral: bool) -> float:
    """One cell's value; a DataError naming its line and column when it is not a number (an integer)."""
    try:
        v = float(cells[i])
    except ValueError:
        v = None
    if v is None or (integral and not (v.is_integer() and abs(v) <= MAX_INT)):
        what = "an integer" if integral else "a number"
        if v is not None and v.is_integer():
            what = "an integer of at most 2**53 in size"
        raise DataError(
            f"file.csv: {path}: line {line}, {_column(header, i)}: {short_repr(cells[i])} is not {what}", param="path"
        )
    return v


register(
    Source(
        name="file.csv",
        params=CsvParams,
        fields=_csv_fields,
        table=FieldTable(
            (
                FieldRow(
                    "FIELD",
                    "int64 if int_fields lists it, else float",
                    "(k,) for a list of k columns, () for a single column",
                    "one field per key of columns: those columns' cells, read as numbers",
                ),
            )
        ),
        load=_csv_load,
        doc="Numeric columns of a .csv table, grouped into fields; int_fields are read as int64 labels.",
    )
)
