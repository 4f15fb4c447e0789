"""Small helpers to find and read the CSV tables (plain or gzipped) that ship with the datasets."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path
from typing import Iterator

from codixr.data.errors import DatasetFormatError


def find_table(folders: list[Path], name: str) -> Path | None:
    """The first ``name`` or ``name + ".gz"`` found in ``folders``, or ``None``."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_rows(path: str | os.PathLike, required: tuple[str, ...] = ()) -> Iterator[dict[str, str]]:
    """Rows of a CSV file (``.gz`` decompressed on the fly) as dicts; checks the ``required`` columns."""
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetFormatError(
                f"{path.name} has no column(s) {', '.join(missing)}; is it the right file? "
                f"Columns found: {', '.join(reader.fieldnames or [])[:300]}."
            )
        yield from reader
