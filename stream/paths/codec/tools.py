"""``sigstream codec encode|decode|info``: offline coding between audio files and ``.sgc``.

Encoding and decoding run the same frames, range coder and overlap-add as the live link
(:mod:`engines.codec.codec`), in batches. The ``.sgc`` format is documented in
:mod:`engines.codec.container` and ``docs/codec.md``. A file that cannot be used (missing,
not audio, several channels without ``--channel``, a corrupt or truncated ``.sgc``, one made
with other weights, a directory, a missing output folder, over a size cap) is reported in one
line and the command exits with status 2. ``decode`` streams: it checks the whole ``.sgc``
first, then decodes a frame at a time into the WAV (written atomically), so memory does not
grow with the file; it refuses a file that declares more than ``--max-seconds`` of audio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from devices.audio import CODEC_FS, WavSink, read_audio
from devices.frames import DeviceError
from engines.codec.codec import decode_stream, encode_signal, load_codec
from engines.codec.container import ContainerError, SgcReader, write_sgc

__all__ = ["run_codec_command"]

log = logging.getLogger(__name__)


def run_codec_command(args: argparse.Namespace, *, cache_dir: Path | None = None) -> int:
    try:
        if args.action == "encode":
            return _encode(args, cache_dir)
        if args.action == "decode":
            return _decode(args, cache_dir)
        return _info(args)
    except (OSError, DeviceError, ContainerError, ValueError) as exc:
        print(f"sigstream codec {args.action}: {exc}", file=sys.stderr)
        return 2


def _output_folder(path: Path) -> None:
    """Refuse an output that cannot be written before any work is done."""
    if not path.parent.is_dir():
        raise FileNotFoundError(2, "the output folder does not exist", str(path.parent))
    if path.is_dir():
        raise IsADirectoryError(21, "the output is a directory", str(path))


def _encode(args: argparse.Namespace, cache_dir: Path | None) -> int:
    _output_folder(args.output)
    samples = read_audio(args.input, channel=args.channel)
    with load_codec(args.codec, backend=args.backend, cache_dir=cache_dir) as codec:
        coder = codec.coder(kbps=args.kbps)
        packets = encode_signal(samples, codec.config, codec.encoder, coder)
        c = codec.config
        write_sgc(args.output, {"codec": codec.key, "model": codec.model_id, "fs": CODEC_FS,
                                "frame": c.frame, "hop": c.hop, "step": coder.step,
                                "kbps": float(args.kbps), "samples": int(samples.size)}, packets)
    seconds = samples.size / CODEC_FS
    kbps = 8 * sum(map(len, packets)) / seconds / 1000
    print(f"{args.output}: {seconds:.2f} s, {len(packets)} frames, {kbps:.2f} kbps measured "
          f"({args.output.stat().st_size} bytes with the container)")
    return 0


def _decode(args: argparse.Namespace, cache_dir: Path | None) -> int:
    _output_folder(args.output)
    max_samples = round(args.max_seconds * CODEC_FS)
    with SgcReader(args.input, max_samples=max_samples) as reader:
        header = reader.header
        with load_codec(header["codec"], backend=args.backend, cache_dir=cache_dir) as codec:
            if header["model"] != codec.model_id:
                raise ValueError(f"{args.input} was made with {header['model']}; these weights "
                                 f"are {codec.model_id}")
            c = codec.config
            if (header["fs"], header["frame"], header["hop"]) != (CODEC_FS, c.frame, c.hop):
                raise ContainerError(f"{args.input}: frame layout does not match codec "
                                     f"{codec.key}")
            coder = codec.coder(step=header["step"])
            with WavSink(args.output, CODEC_FS) as sink:
                sink.open()
                for block in decode_stream(reader.packets(), header["samples"], c,
                                           codec.decoder, coder):
                    sink.write(block)
    print(f"{args.output}: {header['samples'] / CODEC_FS:.2f} s decoded"
          + (f", {reader.lost} lost frames concealed" if reader.lost else ""))
    return 0


def _info(args: argparse.Namespace) -> int:
    with SgcReader(args.input, max_samples=None) as reader:
        header = reader.header
        coded = sum(len(p or b"") for p in reader.packets())
    seconds = header["samples"] / header["fs"]
    kbps = 8 * coded / max(seconds, 1e-9) / 1000
    print(json.dumps({**header, "seconds": round(seconds, 3), "measured_kbps": round(kbps, 3),
                      "file_bytes": args.input.stat().st_size}, indent=2))
    return 0
