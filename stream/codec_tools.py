"""``sigstream codec encode|decode|info``: offline coding between audio files and ``.sgc``.

Encoding and decoding run the same frames, range coder and overlap-add as the live link
(:mod:`engines.codec.codec`), in batches. The ``.sgc`` format is documented in
:mod:`engines.codec.container` and ``docs/codec.md``. A file that cannot be used (missing,
not audio, several channels without ``--channel``, a corrupt or truncated ``.sgc``, one made
with other weights) is reported in one line and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from devices.audio import CODEC_FS, read_audio, write_audio
from devices.frames import SourceFileError
from engines.codec.codec import decode_signal, encode_signal, load_codec
from engines.codec.container import ContainerError, read_sgc, write_sgc

__all__ = ["run_codec_command"]

log = logging.getLogger(__name__)


def run_codec_command(args: argparse.Namespace, *, cache_dir: Path | None = None) -> int:
    try:
        if args.action == "encode":
            return _encode(args, cache_dir)
        if args.action == "decode":
            return _decode(args, cache_dir)
        return _info(args)
    except (FileNotFoundError, SourceFileError, ContainerError, ValueError) as exc:
        print(f"sigstream codec {args.action}: {exc}", file=sys.stderr)
        return 2


def _encode(args: argparse.Namespace, cache_dir: Path | None) -> int:
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
    header, packets = read_sgc(args.input)
    with load_codec(header["codec"], backend=args.backend, cache_dir=cache_dir) as codec:
        if header["model"] != codec.model_id:
            raise ValueError(f"{args.input} was made with {header['model']}; these weights are "
                             f"{codec.model_id}")
        c = codec.config
        if (header["fs"], header["frame"], header["hop"]) != (CODEC_FS, c.frame, c.hop):
            raise ContainerError(f"{args.input}: frame layout does not match codec {codec.key}")
        samples = decode_signal(packets, header["samples"], c, codec.decoder,
                                codec.coder(step=header["step"]))
    write_audio(args.output, samples, CODEC_FS)
    lost = sum(p is None for p in packets)
    print(f"{args.output}: {header['samples'] / CODEC_FS:.2f} s decoded"
          + (f", {lost} lost frames concealed" if lost else ""))
    return 0


def _info(args: argparse.Namespace) -> int:
    header, packets = read_sgc(args.input)
    seconds = header["samples"] / header["fs"]
    kbps = 8 * sum(len(p or b"") for p in packets) / max(seconds, 1e-9) / 1000
    print(json.dumps({**header, "seconds": round(seconds, 3), "measured_kbps": round(kbps, 3),
                      "file_bytes": args.input.stat().st_size}, indent=2))
    return 0
