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

:func:`read_sgc` checks everything before returning and raises :class:`ContainerError` naming
what is wrong: not an ``.sgc`` file, a newer version, a header that is not a map or lacks keys,
a file cut short (the frame where it ends), a CRC mismatch (corruption), trailing bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack

__all__ = ["MAGIC", "ContainerError", "read_sgc", "write_sgc"]

MAGIC = b"SGC1"
VERSION = 1
REQUIRED = {"v": int, "codec": str, "model": str, "fs": int, "frame": int, "hop": int,
            "step": float, "kbps": float, "samples": int, "frames": int}
MAX_HEADER = 64 * 1024
MAX_FRAME = 0xFFFF


class ContainerError(ValueError):
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
        parts += [struct.pack("<H", len(data)), data]
    body = b"".join(parts)
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    tmp.replace(path)


def read_sgc(path: str | Path) -> tuple[dict[str, Any], list[bytes | None]]:
    """``(header, packets)`` of an ``.sgc`` file (``None`` where a frame was lost)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ContainerError(f"{path}: not an .sgc file (magic {data[:4]!r}, expected {MAGIC!r})")
    if len(data) < 12:
        raise ContainerError(f"{path}: truncated ({len(data)} bytes)")
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
        raise ContainerError(f"{path}: .sgc version {header['v']}; this sigstream reads {VERSION}")
    _check_header(header, path)
    packets: list[bytes | None] = []
    pos = 8 + hlen
    end = len(data) - 4
    for k in range(header["frames"]):
        if pos + 2 > end:
            raise ContainerError(f"{path}: truncated at frame {k} of {header['frames']}")
        (n,) = struct.unpack_from("<H", data, pos)
        if pos + 2 + n > end:
            raise ContainerError(f"{path}: truncated in frame {k} of {header['frames']}")
        packets.append(data[pos + 2:pos + 2 + n] or None)
        pos += 2 + n
    if pos != end:
        raise ContainerError(f"{path}: {end - pos} unexpected bytes after the last frame")
    (crc,) = struct.unpack_from("<I", data, end)
    if crc != zlib.crc32(data[:end]):
        raise ContainerError(f"{path}: CRC mismatch: the file is corrupt")
    return header, packets


def _check_header(header: dict[str, Any], path: Path) -> None:
    for key, kind in REQUIRED.items():
        value = header.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float \
            else isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise ContainerError(f"{path}: header key {key!r} missing or not {kind.__name__}")
    if header["samples"] < 0 or header["frames"] < 0 or header["hop"] <= 0 \
            or header["frame"] < header["hop"]:
        raise ContainerError(f"{path}: header has impossible sizes")
