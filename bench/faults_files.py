"""Rows 10-11 of :mod:`bench.faults`, hostile files: ``sigstream ecg enroll --file`` on huge
sparse files and ``sigstream codec decode`` of a decompression bomb, a directory and a missing
output folder.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import msgpack

from bench.faults_rig import (
    Setup,
)
from bench.harness import cli, measured


def row_enroll_file(setup: Setup) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="enroll-", dir=setup.tmp))
    sparse, digits = work / "sparse.csv", work / "digits.csv"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)
    with open(digits, "wb") as f:
        f.write(b"0123456789" * 10)
        f.truncate(100 + (1 << 30))
    out: dict[str, Any] = {}
    for name, path in (("sparse_1GiB", sparse), ("digits_then_1GiB_NUL", digits)):
        for cap, extra in (("default_cap", []), ("cap_2GiB", ["--max-file-mb", "2048"])):
            out[f"{name}/{cap}"] = measured(
                cli("ecg", "--db", str(work / "users.sqlite"), "enroll", "--user", "bench",
                    "--file", str(path), "--fs", "250", *extra), timeout_s=300)
    shutil.rmtree(work, ignore_errors=True)
    out["ok"] = all(r["exit_code"] not in (0,) and not r["traceback"] and r["stderr_lines"] == 1
                    and (r["peak_rss_mb"] or 0) < 1024 and r["error_line_chars"] < 1000
                    for r in out.values())
    return out


def _sgc_bomb(path: Path, frames: int = 100_000) -> Path:
    """An .sgc of ``frames`` empty (lost) frames under the shipped wideband codec's header,
    written byte by byte (``write_sgc`` refuses it): about 200 KB."""
    from engines.codec.specs import CODECS

    sha = CODECS["wideband"].decoder.weights_sha256()
    header = {"v": 1, "codec": "wideband", "model": f"wideband@{sha[:12]}", "fs": 16000,
              "frame": 1024, "hop": 896, "step": 0.1, "kbps": 16.0,
              "samples": frames * 896 - 128, "frames": frames}
    raw = msgpack.packb(header, use_bin_type=True)
    body = b"SGC1" + struct.pack("<I", len(raw)) + raw + struct.pack("<H", 0) * frames
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return path


def row_codec_decode(setup: Setup) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="decode-", dir=setup.tmp))
    bomb = _sgc_bomb(work / "empty.sgc")
    cases = {
        "empty_frames": [str(bomb), str(work / "a.wav")],
        "empty_frames/max_seconds_1e5": [str(bomb), str(work / "b.wav"), "--max-seconds",
                                         "100000"],
        "directory_input": [str(work), str(work / "c.wav")],
        "missing_output_folder": [str(bomb), str(work / "absent" / "d.wav")],
    }
    out: dict[str, Any] = {"sgc_bytes": bomb.stat().st_size}
    for name, argv in cases.items():
        result = measured(cli("codec", "decode", *argv[:2], "--backend", setup.backend,
                              *argv[2:]), timeout_s=300)
        wav = Path(argv[1])
        result["output_bytes"] = wav.stat().st_size if wav.is_file() else None
        out[name] = result
    shutil.rmtree(work, ignore_errors=True)
    out["ok"] = all(out[n]["exit_code"] == 2 and not out[n]["traceback"]
                    and out[n]["stderr_lines"] == 1 and out[n]["output_bytes"] is None
                    for n in cases)
    return out
