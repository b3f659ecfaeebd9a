"""The ``.sgc`` file: coded speech that can be stored and exchanged (format version 1).

Layout, all integers little-endian::

    magic      4 bytes   b"SGC1"
    hlen       u32       length of the header
    header     hlen      msgpack map (below)
    frames     repeated  u16 length, then that many bytes: one frame packet, in order
    crc        u32       CRC-32 (zlib) of everything before it

Header keys: ``v`` (1), ``codec`` (codec key, e.g. ``"wideband"``), ``model`` (codec key and
the first 12 hex digits of the weights' SHA-256: the decoder must have the same weights),
``fs`` (16000), ``frame``, ``hop`` (samples), ``step`` (quantiser step), ``kbps`` (nominal
operating point), ``samples`` (input length: the decoder trims the padding of the last frame),
``frames`` (packet count). A frame packet is the range coder's output for one frame
(:mod:`engines.codec.bitstream`); a zero-length record is a lost frame, concealed on decode.

:class:`SgcReader` checks everything when it opens a file (one pass over a memory map, so
memory does not grow with the file) and then yields the packets one at a time; :func:`read_sgc`
returns them all. Both raise :class:`ContainerError` naming what is wrong: not an ``.sgc``
file, a directory, over the size cap, a newer version, a header that is not a map or lacks
keys, counts that do not fit the file, a file cut short (the frame where it ends), a packet
that is not whole 32-bit words, too many lost frames, a CRC mismatch (corruption), trailing
bytes.

Bounds (what a frame must hold, so declared counts are checked against the file):

- a record is a coded frame (the range coder's output: a whole number of 32-bit words, at
  least one) or a lost frame (length 0); so ``frames`` <= (file bytes) / 2;
- ``frames`` is exactly the count the encoder makes for ``samples``
  (``max(1, ceil((samples + frame - hop) / hop))``), so ``samples`` <= ``frames * hop``;
- a lost frame is worth concealment, not audio: at most :data:`MAX_LOST` frames, or a tenth
  of the frames if more, may be lost (concealment has faded to silence after 16);
- ``samples`` <= ``max_samples`` (default :data:`MAX_SAMPLES`, one hour at 16 kHz), and the
  file <= ``max_bytes`` (default :data:`MAX_BYTES`).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from devices.lifecycle import ClosesOnExit
from engines.errors import EngineError

__all__ = ["MAGIC", "MAX_BYTES", "MAX_LOST", "MAX_SAMPLES", "ContainerError", "SgcReader",
           "read_sgc", "write_sgc"]

MAGIC = b"SGC1"
VERSION = 1
REQUIRED = {"v": int, "codec": str, "model": str, "fs": int, "frame": int, "hop": int,
            "step": float, "kbps": float, "samples": int, "frames": int}
MAX_HEADER = 64 * 1024
MAX_FRAME = 0xFFFF
#: Default cap on an .sgc file, bytes (about 18 h of wideband speech at 16 kbps).
MAX_BYTES = 128 * 2**20
#: Default cap on the audio an .sgc file may declare, samples: one hour at 16 kHz.
MAX_SAMPLES = 3600 * 16_000
#: Lost frames a file may hold whatever its length (more only up to a tenth of its frames).
MAX_LOST = 16
_WORD = 4  # bytes: a coded frame is whole 32-bit words of the range coder


class ContainerError(EngineError, ValueError):
    """A file that is not a complete, intact ``.sgc`` file."""


def write_sgc(path: str | Path, header: dict[str, Any],
              packets: Sequence[bytes | None]) -> None:
    """Write ``packets`` (``None``: a lost frame) under ``header`` (``v`` and ``frames`` are
    set here). Written to a temporary name and renamed, so a reader never sees half a file."""
    head = {**header, "v": VERSION, "frames": len(packets)}
    _check_header(head, Path(path))
    raw = msgpack.packb(head, use_bin_type=True)
    parts = [MAGIC, struct.pack("<I", len(raw)), raw]
    for packet in packets:
        data = packet or b""
        if len(data) > MAX_FRAME:
            raise ContainerError(f"frame packet of {len(data)} bytes exceeds {MAX_FRAME}")
        if len(data) % _WORD:
            raise ContainerError(f"frame packet of {len(data)} bytes is not whole 32-bit words")
        parts += [struct.pack("<H", len(data)), data]
    body = b"".join(parts)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(2, "the output folder does not exist", str(path.parent))
    if path.is_dir():
        raise IsADirectoryError(21, "the output is a directory", str(path))
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    tmp.replace(path)


class SgcReader(ClosesOnExit):
    """An ``.sgc`` file, checked whole by :meth:`open` (structure, declared counts, lost
    frames, CRC) in one pass over a read-only memory map, then read a packet at a time by
    :meth:`packets`. :attr:`header` and :attr:`lost` (lost frames) are set by ``open``.
    The constructor does no I/O; ``close()`` is safe twice; use it as a context manager."""

    def __init__(self, path: str | Path, *, max_bytes: int = MAX_BYTES,
                 max_samples: int | None = MAX_SAMPLES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self.header: dict[str, Any] = {}
        self.lost = 0
        self.file_bytes = 0
        self._map: mmap.mmap | None = None
        self._start = 0  # offset of the first frame record

    def open(self) -> None:
        path = self.path
        if path.is_dir():
            raise ContainerError(f"{path}: is a directory, not an .sgc file")
        if not path.is_file():
            if not path.exists():
                raise FileNotFoundError(2, "no such file", str(path))
            raise ContainerError(f"{path}: not a regular file")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise ContainerError(f"{path}: {size} bytes, over the {self.max_bytes}-byte cap "
                                 "on an .sgc file")
        if size < 12:  # (an empty file cannot be mapped)
            head = path.read_bytes()[:4]
            if head != MAGIC:
                raise ContainerError(f"{path}: not an .sgc file (magic {head!r}, expected "
                                     f"{MAGIC!r})")
            raise ContainerError(f"{path}: truncated ({size} bytes)")
        with path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.file_bytes = size
        try:
            self._check()
        except BaseException:
            self.close()
            raise

    def _check(self) -> None:
        path, data = self.path, self._map
        assert data is not None
        if data[:4] != MAGIC:
            raise ContainerError(f"{path}: not an .sgc file (magic {data[:4]!r}, expected "
                                 f"{MAGIC!r})")
        (hlen,) = struct.unpack_from("<I", data, 4)
        if hlen > MAX_HEADER or 8 + hlen > len(data):
            raise ContainerError(f"{path}: truncated or corrupt header ({hlen} bytes announced)")
        try:
            header = msgpack.unpackb(data[8:8 + hlen], raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several types for malformed input
            raise ContainerError(f"{path}: corrupt header ({exc})") from None
        if not isinstance(header, dict):
            raise ContainerError(f"{path}: corrupt header (not a map)")
        if isinstance(header.get("v"), int) and header["v"] > VERSION:
            raise ContainerError(f"{path}: .sgc version {header['v']}; this sigstream reads "
                                 f"{VERSION}")
        _check_header(header, path)
        pos = self._start = 8 + hlen
        end = len(data) - 4
        frames, samples = header["frames"], header["samples"]
        if 2 * frames > end - pos:
            raise ContainerError(f"{path}: truncated: declares {frames} frames, the file holds "
                                 f"at most {max(end - pos, 0) // 2}")
        if self.max_samples is not None and samples > self.max_samples:
            raise ContainerError(
                f"{path}: declares {samples} samples ({samples / header['fs']:.0f} s), over the "
                f"cap of {self.max_samples} (--max-seconds raises it)")
        lost = 0
        for k in range(frames):
            if pos + 2 > end:
                raise ContainerError(f"{path}: truncated at frame {k} of {frames}")
            (n,) = struct.unpack_from("<H", data, pos)
            if pos + 2 + n > end:
                raise ContainerError(f"{path}: truncated in frame {k} of {frames}")
            if n == 0:
                lost += 1
            elif n % _WORD:
                raise ContainerError(f"{path}: frame {k} is {n} bytes; a coded frame is whole "
                                     "32-bit words")
            pos += 2 + n
        if pos != end:
            raise ContainerError(f"{path}: {end - pos} unexpected bytes after the last frame")
        (crc,) = struct.unpack_from("<I", data, end)
        if crc != zlib.crc32(memoryview(data)[:end]):
            raise ContainerError(f"{path}: CRC mismatch: the file is corrupt")
        if lost > max(MAX_LOST, frames // 10):
            raise ContainerError(f"{path}: {lost} of {frames} frames lost; a file may lose at "
                                 f"most {max(MAX_LOST, frames // 10)}")
        self.header, self.lost = header, lost

    def packets(self) -> Iterator[bytes | None]:
        """The frame packets in order (``None`` for a lost frame), read as they are asked for."""
        data = self._map
        if data is None:
            raise ContainerError(f"{self.path}: the reader is not open")
        pos = self._start
        for _ in range(self.header["frames"]):
            (n,) = struct.unpack_from("<H", data, pos)
            yield data[pos + 2:pos + 2 + n] or None
            pos += 2 + n

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> SgcReader:
        self.open()
        return self


def read_sgc(path: str | Path, *, max_bytes: int = MAX_BYTES,
             max_samples: int | None = MAX_SAMPLES) -> tuple[dict[str, Any], list[bytes | None]]:
    """``(header, packets)`` of an ``.sgc`` file (``None`` where a frame was lost)."""
    with SgcReader(path, max_bytes=max_bytes, max_samples=max_samples) as reader:
        return reader.header, list(reader.packets())


def _check_header(header: dict[str, Any], path: Path) -> None:
    for key, kind in REQUIRED.items():
        value = header.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float \
            else isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise ContainerError(f"{path}: header key {key!r} missing or not {kind.__name__}")
    if header["samples"] < 0 or header["frames"] < 0 or header["hop"] <= 0 \
            or header["frame"] < header["hop"] or header["fs"] <= 0:
        raise ContainerError(f"{path}: header has impossible sizes")
    # the encoder's frame count for `samples` (engines.codec.codec.frame_count)
    expected = max(1, -(-(header["samples"] + header["frame"] - header["hop"]) // header["hop"]))
    if header["frames"] != expected:
        raise ContainerError(f"{path}: {header['frames']} frames cannot code "
                             f"{header['samples']} samples ({expected} frames do)")
