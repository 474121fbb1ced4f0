"""Downloads: a model folder as one zip, latent coordinates and tables as CSV (no streamlit here).

A zip holds `<name>/model.safetensors`, `<name>/config.json` and `<name>/metrics.json` (when
present), so unpacking it anywhere gives a folder `aecore eval` and the app load directly. Only
those files travel: nothing else in the folder (maps, stray files) is read or shipped.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from aecore.errors import ConfigError, ModelFileError
from aecore.store import CONFIG, METRICS, WEIGHTS

MAX_ZIP_BYTES = 512 << 20    # a download the browser should still cope with


def model_zip(folder: str | Path) -> bytes:
    """Zip bytes of a model folder: weights + config (+ metrics), under one top folder named like it."""
    folder = Path(folder)
    missing = [n for n in (WEIGHTS, CONFIG) if not (folder / n).is_file()]
    if missing:
        raise ModelFileError(f"{folder}: not a model folder (no {' and no '.join(missing)})")
    files = [n for n in (WEIGHTS, CONFIG, METRICS) if (folder / n).is_file()]
    size = sum((folder / n).stat().st_size for n in files)
    if size > MAX_ZIP_BYTES:
        raise ModelFileError(f"{folder.name}: {size / 2**20:.0f} MiB is too large to download from the app "
                             f"(limit {MAX_ZIP_BYTES >> 20} MiB); copy the folder instead: {folder}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in files:
            zf.writestr(f"{folder.name}/{name}", (folder / name).read_bytes())
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(float(value)) else repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return "" if value is None else value


def codes_csv(coords: Any, labels: Any | None = None, *, classes: Sequence[str] | None = None,
              names: Sequence[str] | None = None) -> str:
    """CSV text of (N, d) coordinates, one row per example: index, x, y (d = 2) or z1..zd, label
    (and the class name when `classes` is given)."""
    coords = np.asarray(coords.detach().cpu() if hasattr(coords, "detach") else coords, dtype=np.float64)
    if coords.ndim != 2:
        raise ConfigError(f"coordinates must be (N, d), got shape {list(coords.shape)}")
    n, d = coords.shape
    if names is None:
        names = ["x", "y"] if d == 2 else [f"z{i + 1}" for i in range(d)]
    if len(names) != d:
        raise ConfigError(f"{len(names)} column names for {d} coordinates")
    header = ["index", *names]
    label_array = None
    if labels is not None:
        label_array = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).reshape(-1)
        if len(label_array) != n:
            raise ConfigError(f"{len(label_array)} labels for {n} points")
        header.append("label")
        if classes is not None:
            header.append("class")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i in range(n):
        row: list[Any] = [i, *(_cell(v) for v in coords[i])]
        if label_array is not None:
            label = int(label_array[i])
            row.append(label)
            if classes is not None:
                row.append(classes[label] if 0 <= label < len(classes) else "")
        writer.writerow(row)
    return out.getvalue()


def table_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text of a list of dicts (the columns of the first row unless given); NaN/None -> empty."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()
