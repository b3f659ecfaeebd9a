"""ECG files: one lead of a WFDB record, a CSV / NPY / NPZ table or a BITalino OpenSignals text
file, read into an :class:`~devices.ecg_sim.EcgRecord` in mV (:func:`load_ecg`).

Every read is bounded (:mod:`devices.files`): a file over the size cap, corrupt, ragged or not
numeric is a :class:`~devices.frames.SourceFileError` of one line.

Pure numpy (``wfdb`` imported lazily for WFDB records); no torch, no :mod:`stream`.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from devices.ecg_sim import EcgRecord
from devices.files import (
    MAX_FILE_BYTES,
    check_file,
    excerpt,
    load_npy,
    numeric,
    open_table,
    read_table,
    text_lines,
)
from devices.frames import SourceFileError

__all__ = ["EcgFormat", "load_ecg"]

EcgFormat = Literal["csv", "npy", "npz", "wfdb", "opensignals"]

_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_WFDB_SUFFIXES = (".hea", ".dat")
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
# BITalino ECG sensor transfer function (datasheet): ECG(V) = (ADC / 2^n - 1/2) * VCC / G.
_BITALINO_VCC_V = 3.3
_BITALINO_ECG_GAIN = 1100.0
_BLOCK = 1 << 20  # samples converted to the record's float32 at a time


def load_ecg(
    path: str | Path,
    *,
    fs_hz: float | None = None,
    column: int | str | None = None,
    fmt: EcgFormat | None = None,
    offset: float = 0.0,
    scale: float = 1.0,
    max_bytes: int = MAX_FILE_BYTES,
) -> EcgRecord:
    """Read one ECG lead from a file; ``r_peaks`` of the result is empty (unknown).

    Formats (``fmt``; by default from the suffix, and ``.txt`` files with an OpenSignals
    header are read as such):

    - ``wfdb``: a PhysioNet record (``path`` = record name, with or without ``.hea``), via the
      ``wfdb`` package; physical units converted to mV; ``fs_hz`` from the header (an
      ``fs_hz`` given must match it); ``column``: channel index or name (default 0). Invalid
      samples are NaN.
    - ``csv`` (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``/``.bz2`` compressed): one
      value per row and column (comma, tab or whitespace separated), ``#`` comments and blank
      lines skipped, an optional header row; ``column``: index or header name; default: the
      only column, else the only one whose name contains "ecg".
    - ``npy``: a 1-D numeric array, or 2-D (samples, channels) with ``column`` an index.
    - ``npz``: ``column`` names the array (default: the only one, or ``"ecg"``).
    - ``opensignals``: a BITalino/OpenSignals text file; ``fs_hz`` from the header; ``column``
      a channel label (default: the first analog channel of an ECG sensor); raw ADC values of
      an ECG sensor are converted to mV with the BITalino transfer function
      ``(ADC / 2^bits - 1/2) * 3.3 V / 1100``.

    Then ``signal = (values - offset) * scale`` (``offset`` in file units, ``scale`` in mV per
    file unit; the defaults keep values as read). CSV, NPY and NPZ need ``fs_hz`` (Hz).
    Returns float32 (n,) samples; NaN marks missing samples, +-inf is refused.

    Bounds (:mod:`devices.files`): a file (each file of a WFDB record, the decompressed text
    of a ``.gz``/``.bz2``, an NPZ member as its zip directory declares it) may hold at most
    ``max_bytes`` (default :data:`~devices.files.MAX_FILE_BYTES`), a text line 64 Ki
    characters; text is parsed a batch of lines at a time and ``.npy`` memory-mapped, so
    reading costs the float32 result plus a bounded working set.

    Raises ``FileNotFoundError`` for a missing file, :class:`SourceFileError` for one that is
    a directory, over the cap, corrupt, empty, ragged or not numeric (one line, quoting at
    most a short excerpt of a bad value), ``ValueError`` for bad arguments, and
    ``ImportError`` (with the install command) when ``wfdb`` is needed and missing.
    """
    path = Path(path)
    if path.is_dir():
        raise SourceFileError(f"{path}: is a directory, not an ECG file")
    if fmt is None:
        fmt = _guess_format(path)
    if not (math.isfinite(offset) and math.isfinite(scale) and scale != 0):
        raise ValueError("offset must be finite and scale finite and nonzero")
    if fmt == "wfdb":
        values, file_fs = _load_wfdb(path, column, max_bytes)
    else:
        check_file(path, max_bytes=max_bytes, what="an ECG file")
        if fmt == "opensignals":
            values, file_fs = _load_opensignals(path, column, max_bytes)
        elif fmt == "csv":
            values, file_fs = _load_text(path, column, max_bytes), None
        elif fmt == "npy":
            values, file_fs = _load_npy(path, column), None
        elif fmt == "npz":
            values, file_fs = _load_npz(path, column, max_bytes), None
        else:
            raise ValueError(f"unknown format {fmt!r}")
    if file_fs is None:
        if fs_hz is None:
            raise ValueError(f"{path}: a {fmt} file carries no sample rate; pass fs_hz")
        file_fs = fs_hz
    elif fs_hz is not None and not math.isclose(fs_hz, file_fs, rel_tol=1e-9):
        raise ValueError(f"{path}: fs_hz={fs_hz} differs from the file's {file_fs} Hz")
    if not (math.isfinite(file_fs) and file_fs > 0):
        raise SourceFileError(f"{path}: invalid sample rate {file_fs!r}")
    if values.size == 0:
        raise SourceFileError(f"{path}: no samples")
    # block by block: a memory-mapped .npy is never copied whole into float64
    signal = np.empty(values.size, np.float32)
    for start in range(0, values.size, _BLOCK):
        block = np.asarray(values[start : start + _BLOCK], dtype=np.float64)
        if np.isinf(block).any():
            raise SourceFileError(
                f"{path}: sample {start + int(np.flatnonzero(np.isinf(block))[0])} is inf"
            )
        signal[start : start + _BLOCK] = (block - offset) * scale
    return EcgRecord(signal=signal, fs_hz=float(file_fs), r_peaks=np.empty(0, np.int64))


def _guess_format(path: Path) -> EcgFormat:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in _WFDB_SUFFIXES or (suffix == "" and path.with_suffix(".hea").is_file()):
        return "wfdb"
    if suffix == ".npy":
        return "npy"
    if suffix == ".npz":
        return "npz"
    if suffix in _TEXT_SUFFIXES:
        if suffix == ".txt" and path.is_file() and _is_opensignals(path):
            return "opensignals"
        return "csv"
    raise ValueError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; pass fmt= "
        "(wfdb, csv, npy, npz or opensignals)"
    )


def _is_opensignals(path: Path) -> bool:
    with path.open("rb") as f:
        return f.readline(64).startswith(b"# OpenSignals")  # (bounded: any file may come)


def _load_text(path: Path, column: int | str | None, max_bytes: int) -> np.ndarray:
    table = open_table(path, max_bytes=max_bytes, sniff=(",", "\t"), what="samples")
    return table.read(_column_index(path, column, table.header, table.width))


def _column_index(
    path: Path, column: int | str | None, header: Sequence[str] | None, width: int
) -> int:
    if column is None:
        if width == 1:
            return 0
        if header is not None:
            ecg = [i for i, name in enumerate(header) if "ecg" in name.lower()]
            if len(ecg) == 1:
                return ecg[0]
        raise SourceFileError(
            f"{path}: {width} columns and no single 'ecg' column; pass column= (index or name)"
        )
    if isinstance(column, str):
        if header is None or column not in header:
            raise SourceFileError(
                f"{path}: no column named {column!r} (header: {_names(header)})"
            )
        return header.index(column)
    if not -width <= column < width:
        raise SourceFileError(f"{path}: column {column} out of range ({width} columns)")
    return column % width


def _names(names: Sequence[str] | None) -> str:
    """A header's names for an error message, cut short (a file may name anything)."""
    return "none" if names is None else excerpt(", ".join(names), 120)


def _load_npy(path: Path, column: int | str | None) -> np.ndarray:
    # memory-mapped: a sample is read when it is converted, never the whole file at once
    array = load_npy(path)
    if array.ndim == 1:
        if column not in (None, 0):
            raise SourceFileError(f"{path}: a 1-D array has no column {column!r}")
        return array
    if array.ndim == 2:
        if not isinstance(column, int):
            raise SourceFileError(
                f"{path}: a 2-D array {array.shape}; pass column= (an index) to pick a lead"
            )
        return array[:, _column_index(path, column, None, array.shape[1])]
    raise SourceFileError(f"{path}: expected a 1-D array (samples,), got shape {array.shape}")


def _load_npz(path: Path, column: int | str | None, max_bytes: int) -> np.ndarray:
    """One array of an NPZ archive. The member's size is checked in the zip directory and
    its .npy header against that size before anything is decompressed (a zip bomb is
    refused, not inflated); zipfile never reads past the size the directory declares."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n.removesuffix(".npy"): n for n in archive.namelist() if n.endswith(".npy")}
            names = list(members)
            if column is None:
                name = names[0] if len(names) == 1 else "ecg"
            elif isinstance(column, str):
                name = column
            else:
                raise SourceFileError(f"{path}: column must name an array of {_names(names)}")
            if name not in members:
                raise SourceFileError(
                    f"{path}: no array {excerpt(name)} in {_names(names)}; pass column="
                )
            info = archive.getinfo(members[name])
            if info.file_size > max_bytes:
                raise SourceFileError(
                    f"{path}: array {excerpt(name)} is {info.file_size} bytes uncompressed, "
                    f"over the {max_bytes}-byte cap (raise it with max_bytes= or --max-file-mb)"
                )
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f".npy format version {version} is not supported")
            if dtype.kind not in "iuf":
                raise SourceFileError(f"{path}: dtype {dtype} is not a real number type")
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise SourceFileError(
                    f"{path}: array {excerpt(name)} declares shape {shape} of {dtype}, more "
                    f"than its {info.file_size} bytes hold"
                )
            with archive.open(info) as member:
                array = np.lib.format.read_array(member, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        if isinstance(exc, SourceFileError):
            raise
        raise SourceFileError(f"{path}: not a valid .npz file: {exc}") from exc
    array = numeric(path, array)
    if array.ndim != 1:
        raise SourceFileError(f"{path}: array {name!r} has shape {array.shape}, not (samples,)")
    return array


def _load_opensignals(
    path: Path, column: int | str | None, max_bytes: int
) -> tuple[np.ndarray, float]:
    lines = text_lines(path, max_bytes=max_bytes, skip_comments=False)
    meta_line = next((line for number, line in lines if number == 2), "")
    try:
        meta_all = json.loads(meta_line.lstrip("#").strip())
        meta = next(iter(meta_all.values()))
        labels: list[str] = list(meta["column"])
        fs = float(meta["sampling rate"])
        resolution: list[int] = list(meta["resolution"])
        sensors: list[str] = list(meta.get("sensor", []))
        analog: list[str] = list(meta.get("label", []))
    except (IndexError, ValueError, KeyError, StopIteration, AttributeError, TypeError) as exc:
        raise SourceFileError(f"{path}: not a valid OpenSignals header: {exc}") from exc
    if column is None:
        ecg = [label for label, sensor in zip(analog, sensors, strict=False) if sensor == "ECG"]
        if not ecg:
            raise SourceFileError(f"{path}: no ECG sensor in the header; pass column=")
        column = ecg[0]
    if isinstance(column, int):
        if not 0 <= column < len(labels):
            raise SourceFileError(f"{path}: column {column} out of range ({len(labels)})")
        column = labels[column]
    if column not in labels:
        raise SourceFileError(
            f"{path}: no channel {excerpt(str(column))} (channels: {_names(labels)})"
        )
    index = labels.index(column)
    body = ((number, line) for number, line in lines if line and not line.startswith("#"))
    values = read_table(path, body, delimiter=None, width=len(labels), column=index)
    if column in analog and sensors[analog.index(column)] == "ECG":
        bits = resolution[index]
        values = (values / 2.0**bits - 0.5) * _BITALINO_VCC_V / _BITALINO_ECG_GAIN * 1e3
    return values, fs


def _load_wfdb(
    path: Path, column: int | str | None, max_bytes: int
) -> tuple[np.ndarray, float]:
    try:
        import wfdb  # optional dependency, imported only for WFDB records
    except ImportError as exc:
        raise ImportError(
            "reading WFDB records needs the 'wfdb' package: pip install wfdb "
            "(or the project's 'data' extra)"
        ) from exc
    record_name = path.with_suffix("") if path.suffix.lower() in _WFDB_SUFFIXES else path
    header = record_name.with_name(record_name.name + ".hea")
    check_file(header, max_bytes=max_bytes, what="a WFDB header")
    try:
        meta = wfdb.rdheader(str(record_name))
    except Exception as exc:  # wfdb raises many types for corrupt records
        raise SourceFileError(f"{record_name}: corrupt WFDB record: {exc}") from exc
    names = list(meta.sig_name or [])
    n_sig = int(meta.n_sig or 0)
    if n_sig == 0:
        raise SourceFileError(f"{record_name}: WFDB record has no signals")
    if column is None:
        index = 0
    elif isinstance(column, str):
        if column not in names:
            raise SourceFileError(
                f"{record_name}: no channel {excerpt(column)} (channels: {_names(names)})"
            )
        index = names.index(column)
    elif 0 <= column < n_sig:
        index = column
    else:
        raise SourceFileError(f"{record_name}: channel {column} out of range")
    # the header's sample count is checked against the cap before wfdb allocates for it
    for name in sorted(set(meta.file_name or [])):
        try:
            check_file(record_name.parent / name, max_bytes=max_bytes,
                       what="a WFDB signal file")
        except FileNotFoundError as exc:
            raise SourceFileError(f"{record_name}: WFDB signal file missing: {exc}") from exc
    if int(meta.sig_len or 0) > max_bytes // 2:
        raise SourceFileError(
            f"{record_name}: the header declares {meta.sig_len} samples a channel, over the "
            f"{max_bytes // 2} a {max_bytes}-byte cap allows (max_bytes= or --max-file-mb)"
        )
    try:
        record = wfdb.rdrecord(str(record_name), channels=[index])
    except FileNotFoundError as exc:  # the header names a signal file that is not there
        raise SourceFileError(f"{record_name}: WFDB signal file missing: {exc}") from exc
    except Exception as exc:  # wfdb raises many types for corrupt records
        raise SourceFileError(f"{record_name}: corrupt WFDB record: {exc}") from exc
    signals = record.p_signal
    if signals is None or signals.ndim != 2 or signals.shape[1] != 1:
        raise SourceFileError(f"{record_name}: WFDB record has no signals")
    unit = (record.units[0] if record.units else "mV") or "mV"
    factor = _UNIT_TO_MV.get(unit.strip().lower())
    if factor is None:
        raise SourceFileError(f"{record_name}: channel unit {excerpt(unit)} is not a voltage")
    return signals[:, 0] * factor, float(record.fs)
