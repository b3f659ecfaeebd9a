"""Reading recordings within bounds: the one home of file size caps and bounded text parsing.

Every file a loader or replay source reads is checked first (:func:`check_file`: it exists,
is a regular file, not a directory or a device, and holds at most ``max_bytes``). Text is
read one line at a time (:func:`text_lines`): a line may hold at most ``max_line_chars``
characters, and compressed text (``.gz``, ``.bz2``) is decompressed as it is read and held to
the same byte cap, so a small archive of a huge file is refused as soon as it passes the cap.
Numbers are parsed a batch of lines at a time (:func:`read_table`), keeping only the values;
:func:`open_table` reads a delimited table's head (its delimiter, an optional header row and the
width of a row) the same way for every loader.

So a text file of ``B`` bytes (at most ``max_bytes``) holds at most ``B / 2`` values and costs
at most ``4 B`` bytes as float64 (about ``B`` for typical 8-character values), plus one batch.
Binary arrays (``.npy``, :func:`load_npy`) are memory-mapped and never read past the file.

Errors are :class:`~devices.frames.SourceFileError`, one line naming the file and, where a
line or value is to blame, its number and an excerpt of at most :data:`EXCERPT_CHARS`.

Pure Python and numpy; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import itertools
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from devices.frames import SourceFileError

__all__ = [
    "EXCERPT_CHARS",
    "MAX_FILE_BYTES",
    "MAX_LINE_CHARS",
    "TextTable",
    "check_file",
    "excerpt",
    "is_number",
    "load_npy",
    "numeric",
    "open_table",
    "read_table",
    "split_row",
    "text_lines",
]

#: Default cap on a file a loader reads, bytes (and on the decompressed text of a .gz/.bz2):
#: 128 MiB, e.g. 5 days of 250 Hz ECG as float32 .npy, 15 h as a CSV of 8-character values.
MAX_FILE_BYTES = 128 * 2**20
#: Default cap on one line of a text file, characters.
MAX_LINE_CHARS = 64 * 1024
#: Characters of a bad line or value quoted in an error.
EXCERPT_CHARS = 40
_BATCH_LINES = 8192


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, saying how long it was if cut."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} in all)"


def check_file(path: Path, *, max_bytes: int, what: str = "a file") -> int:
    """Size in bytes of ``path``, a regular file of at most ``max_bytes``; ``what`` names it
    in messages (``"an ECG file"``).

    Raises ``FileNotFoundError`` when it does not exist and :class:`SourceFileError` for a
    directory, something that is not a regular file (a FIFO, a device) or a file over the cap.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    try:
        if path.is_dir():
            raise SourceFileError(f"{path}: is a directory, not {what}")
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        if not path.is_file():
            raise SourceFileError(f"{path}: not a regular file")
        size = path.stat().st_size
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise SourceFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if size > max_bytes:
        raise SourceFileError(
            f"{path}: {_mib(size)} is over the {_mib(max_bytes)} cap on {what} "
            "(raise it with max_bytes= or --max-file-mb)"
        )
    return size


def text_lines(
    path: Path,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_line_chars: int = MAX_LINE_CHARS,
    skip_comments: bool = True,
) -> Iterator[tuple[int, str]]:
    """``(line number, stripped text)`` of each line of a UTF-8 text file (``.gz``/``.bz2``
    decompressed on the fly), blank lines and ``#`` comments left out unless
    ``skip_comments`` is false. The file must pass :func:`check_file`; its (decompressed)
    text may hold at most ``max_bytes`` bytes and each line ``max_line_chars`` characters."""
    check_file(path, max_bytes=max_bytes, what="a text file")
    suffix = path.suffix.lower()
    total = 0
    number = 0
    try:
        with _open_binary(path, suffix) as f:
            while True:
                raw = f.readline(max_line_chars + 1)
                if not raw:
                    return
                number += 1
                total += len(raw)
                if total > max_bytes:
                    raise SourceFileError(
                        f"{path}: more than {_mib(max_bytes)} of text"
                        + (" once decompressed" if suffix in (".gz", ".bz2") else "")
                        + " (raise the cap with max_bytes= or --max-file-mb)"
                    )
                if len(raw) > max_line_chars and not raw.endswith(b"\n"):
                    raise SourceFileError(
                        f"{path}: line {number} is longer than {max_line_chars} characters: "
                        f"{excerpt(raw.decode('utf-8', 'replace'))}"
                    )
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise SourceFileError(
                        f"{path}: not a UTF-8 text file (line {number}: {excerpt(raw)})"
                    ) from None
                if not skip_comments or (line and not line.startswith("#")):
                    yield number, line
    except (OSError, EOFError, zlib.error) as exc:  # gzip/bz2 corruption, a read error
        raise SourceFileError(f"{path}: cannot read: {exc}") from exc


def _open_binary(path: Path, suffix: str) -> IO[bytes]:
    if suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    return path.open("rb")


def split_row(line: str, delimiter: str | None) -> list[str]:
    """Values of one line: split at ``delimiter`` (``None``: whitespace), stripped."""
    return [v.strip() for v in (line.split(delimiter) if delimiter else line.split())]


def is_number(value: str) -> bool:
    """Whether ``float()`` reads ``value`` (``"nan"`` and ``"inf"`` included)."""
    try:
        float(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TextTable:
    """A delimited text table whose head has been read (:func:`open_table`).

    ``delimiter``: what separates values (``None``: whitespace); ``header``: the names of a
    first row that was not all numbers, else ``None``; ``width``: values in the first data row,
    which every row must have; ``rows``: the ``(line number, text)`` data rows, read lazily
    (once) by :meth:`read`.
    """

    path: Path
    delimiter: str | None
    header: tuple[str, ...] | None
    width: int
    rows: Iterator[tuple[int, str]]

    def read(self, column: int | None = None) -> np.ndarray:
        """The numbers: float64 ``(rows, width)``, or ``(rows,)`` of ``column``
        (:func:`read_table`)."""
        return read_table(self.path, self.rows, delimiter=self.delimiter, width=self.width,
                          column=column)


def open_table(
    path: Path,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    skip_rows: int = 0,
    delimiter: str | None = None,
    sniff: Sequence[str] = (",",),
    what: str = "rows",
) -> TextTable:
    """Read the head of the delimited text table ``path`` (:func:`text_lines`: blank lines and
    ``#`` comments left out), after its first ``skip_rows`` lines.

    ``delimiter``: ``None`` picks the first of ``sniff`` that the first row holds, else
    whitespace; ``""`` is whitespace. A first row that is not all numbers is a header. ``what``
    names the rows in errors (``"samples"``). Raises :class:`SourceFileError` for a file with
    no data row.
    """
    lines = itertools.islice(text_lines(path, max_bytes=max_bytes), skip_rows, None)
    first = next(lines, None)
    if first is None:
        raise SourceFileError(f"{path}: no {what} (empty file)")
    if delimiter is None:
        delimiter = next((d for d in sniff if d in first[1]), "")
    sep = delimiter or None
    header: tuple[str, ...] | None = None
    if not all(is_number(v) for v in split_row(first[1], sep)):
        header = tuple(split_row(first[1], sep))
        first = next(lines, None)
        if first is None:
            raise SourceFileError(f"{path}: a header and no {what}")
    width = len(split_row(first[1], sep))
    return TextTable(path=path, delimiter=sep, header=header, width=width,
                     rows=itertools.chain([first], lines))


def numeric(path: Path, array: object) -> np.ndarray:
    """``array`` if it is a numpy array of a real number dtype (integer or float), else
    :class:`SourceFileError`."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        raise SourceFileError(
            f"{path}: dtype {getattr(array, 'dtype', type(array))} is not a real number type"
        )
    return array


def load_npy(path: Path) -> np.ndarray:
    """The array of the ``.npy`` file ``path``, memory-mapped read-only (a value is read when
    it is used) and never unpickled; its dtype must be a real number type (:func:`numeric`).
    The caller checks the file first (:func:`check_file`)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "Python objects" in str(exc):  # numpy's words for an object array
            raise SourceFileError(
                f"{path}: holds Python objects (ragged rows?), not a plain numeric array"
            ) from exc
        raise SourceFileError(f"{path}: not a valid .npy file: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise SourceFileError(f"{path}: not a valid .npy file: {exc}") from exc
    return numeric(path, array)


def read_table(
    path: Path,
    lines: Iterable[tuple[int, str]],
    *,
    delimiter: str | None,
    width: int,
    column: int | None = None,
) -> np.ndarray:
    """Numbers of ``lines`` (``(number, text)`` pairs), ``width`` values a line separated by
    ``delimiter`` (``None``: whitespace): float64 ``(rows, width)``, or ``(rows,)`` of
    ``column`` (then only that column must be numeric). Parsed a batch of lines at a time.

    Raises :class:`SourceFileError` naming the first ragged line, or the first value that is
    not a number (an excerpt of it)."""
    parts: list[np.ndarray] = []
    batch: list[tuple[int, str]] = []
    for item in lines:
        batch.append(item)
        if len(batch) == _BATCH_LINES:
            parts.append(_parse_batch(path, batch, delimiter, width, column))
            batch = []
    if batch:
        parts.append(_parse_batch(path, batch, delimiter, width, column))
    if not parts:
        return np.empty((0,) if column is not None else (0, width))
    return np.concatenate(parts)


def _parse_batch(
    path: Path,
    batch: list[tuple[int, str]],
    delimiter: str | None,
    width: int,
    column: int | None,
) -> np.ndarray:
    try:  # fast path; the loop below finds the line to blame when it fails
        table = np.loadtxt(
            io.StringIO("\n".join(line for _, line in batch)),
            delimiter=delimiter,
            ndmin=2,
        )
    except ValueError:
        pass
    else:
        if table.shape == (len(batch), width):
            return table if column is None else table[:, column]
    rows = np.empty((len(batch), width if column is None else 1))
    for k, (number, line) in enumerate(batch):
        row = split_row(line, delimiter)
        if len(row) != width:
            raise SourceFileError(
                f"{path}: ragged rows: line {number} has {len(row)} values, not {width} "
                "(every row must have as many)"
            )
        for j, value in enumerate(row if column is None else [row[column]]):
            try:
                rows[k, j] = float(value)
            except ValueError:
                raise SourceFileError(
                    f"{path}: line {number}: {excerpt(value)} is not a number"
                ) from None
    return rows if column is None else rows[:, 0]


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"
