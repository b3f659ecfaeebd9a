"""The codec's pieces: model shapes, framing and overlap-add, range coding, the .sgc container,
the multi-band loss, training and calibration (tiny), and the shipped codecs end to end."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from devices.audio import CODEC_FS, read_audio
from engines.codec.bitstream import BitstreamError, LatentCoder, measured_kbps
from engines.codec.codec import (
    PLC_FADE,
    StreamDecoder,
    StreamEncoder,
    codec_tables,
    decode_signal,
    decode_stream,
    encode_signal,
    frame_count,
    load_codec,
)
from engines.codec.configs import CONFIGS, synthesis_window
from engines.codec.container import ContainerError, read_sgc, write_sgc
from engines.codec.losses import BAND_EDGES_HZ, MultiBandLoss, band_filters, band_weights
from engines.codec.model import CodecNet
from engines.codec.quality import log_spectral_distance_db, pesq_wb, snr_db
from engines.codec.specs import CODECS
from engines.codec.train import calibrate_step, train_codec

SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")
needs_speech = pytest.mark.skipif(not SPEECH.is_file(), reason="alsa-utils speech not installed")


class _Echo:
    """Frames as their own 'latent': framing and overlap-add tested without a model."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def encode(self, frames: np.ndarray) -> np.ndarray:
        self.frames.extend(frames.copy())
        return np.zeros((len(frames), 4, 64), np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        return np.stack([self.frames.pop(0) for _ in range(len(latents))])


def _coder(step: float = 0.1) -> LatentCoder:
    return LatentCoder(np.full((4, 64), 0.2), step)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_shapes_and_delay(name: str) -> None:
    cfg = CONFIGS[name]
    enc, dec = CodecNet(name, "encode").eval(), CodecNet(name, "decode").eval()
    dec.load_state_dict(enc.state_dict())
    with torch.inference_mode():
        z = enc(torch.randn(3, 1, cfg.frame))
        y = dec(z)
    assert tuple(z.shape) == (3, *cfg.latent_shape)
    assert z.numel() // 3 == cfg.frame // 4  # the paper's 1/4 bottleneck
    assert float(z.abs().max()) < 1.0
    assert tuple(y.shape) == (3, 1, cfg.frame)
    assert cfg.delay_ms <= (64 if name == "wideband" else 20)


def test_synthesis_window_sums_to_one() -> None:
    for cfg in CONFIGS.values():
        w = synthesis_window(cfg.frame, cfg.overlap)
        total = np.zeros(cfg.hop * 6 + cfg.frame)
        for k in range(7):
            total[k * cfg.hop:k * cfg.hop + cfg.frame] += w
        middle = total[cfg.frame:cfg.hop * 6]
        np.testing.assert_allclose(middle, 1.0, atol=1e-6)


@pytest.mark.parametrize("block", [1, 160, 333, 5000])
def test_streaming_equals_offline_and_reconstructs(block: int) -> None:
    cfg = CONFIGS["wideband"]
    x = np.random.default_rng(1).standard_normal(7000).astype(np.float32) * 0.1
    echo = _Echo()
    offline = encode_signal(x, cfg, echo.encode, _coder())
    assert len(offline) == frame_count(x.size, cfg)
    y = decode_signal(offline, x.size, cfg, echo.decode, _coder())
    np.testing.assert_allclose(y, x, atol=1e-6)  # overlap-add is exact

    echo = _Echo()
    stream = StreamEncoder(cfg, echo.encode, _coder())
    packets = [p for i in range(0, x.size, block) for p in stream.push(x[i:i + block])]
    packets += stream.flush()
    assert len(packets) == len(offline)
    np.testing.assert_allclose(decode_signal(packets, x.size, cfg, echo.decode, _coder()), x,
                               atol=1e-6)


def test_concealment_fades_and_counts() -> None:
    cfg = CONFIGS["lowdelay"]
    frame = np.ones((1, 1, cfg.frame), np.float32)
    dec = StreamDecoder(cfg, lambda z: frame, LatentCoder(np.full(cfg.latent_shape, 0.2), 0.1))
    good = dec.coder.encode(np.zeros(cfg.latent_shape))
    for _ in range(3):
        dec.decode(good)
    lost = [dec.decode(None) for _ in range(3)]
    assert dec.concealed == 3
    for k, out in enumerate(lost, start=1):
        # Mid-hop samples are the previous frame faded by PLC_FADE per lost frame.
        assert out[cfg.overlap + 5] == pytest.approx(PLC_FADE ** k)
    assert dec.decode(b"\x01\x02\x03") is not None and dec.corrupt == 1
    back = dec.decode(good)
    assert back[-1] == pytest.approx(1.0)  # a good frame restores full level


def test_range_coder_round_trip_and_rate() -> None:
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.05, 0.4, (4, 64))
    latent = np.tanh(rng.laplace(0, scales)).astype(np.float32)
    sizes = []
    for step in (0.05, 0.1, 0.2, 0.4):
        coder = LatentCoder(scales, step)
        data = coder.encode(latent)
        assert len(data) % 4 == 0
        out = coder.decode(data)
        assert np.abs(out - latent).max() <= step / 2 + 1e-6
        sizes.append(len(data))
    assert sizes == sorted(sizes, reverse=True)  # a coarser step costs fewer bytes
    assert measured_kbps([b"x" * 100] * 10, 1.0) == pytest.approx(8.0)


def test_range_coder_refuses_broken_frames() -> None:
    coder = _coder()
    data = coder.encode(np.zeros((4, 64)))
    with pytest.raises(BitstreamError):
        coder.decode(b"")
    with pytest.raises(BitstreamError):
        coder.decode(data[:-1])  # not whole words
    with pytest.raises(BitstreamError):
        coder.decode(b"\xff" * 64)


_HEADER = {"codec": "wideband", "model": "wideband@0123456789ab", "fs": CODEC_FS,
           "frame": 1024, "hop": 896, "step": 0.1, "kbps": 16.0}


def _samples(frames: int) -> int:
    """Input samples the encoder codes in exactly ``frames`` wideband frames."""
    return frames * 896 - 128


def _sgc(tmp_path: Path, packets: list[bytes | None], samples: int | None = None) -> Path:
    path = tmp_path / "a.sgc"
    samples = _samples(len(packets)) if samples is None else samples
    write_sgc(path, {**_HEADER, "samples": samples}, packets)
    return path


def test_container_round_trip(tmp_path: Path) -> None:
    packets: list[bytes | None] = [b"abcd", None, b"x" * 300]
    header, back = read_sgc(_sgc(tmp_path, packets))
    assert back == packets
    assert header["frames"] == 3 and header["v"] == 1 and header["samples"] == _samples(3)
    assert frame_count(header["samples"], CONFIGS["wideband"]) == 3


def _raw_sgc(path: Path, header: dict[str, object], records: list[bytes]) -> Path:
    """An .sgc file written byte by byte (write_sgc refuses what these tests need)."""
    raw = msgpack.packb({**header, "v": 1}, use_bin_type=True)
    body = b"SGC1" + struct.pack("<I", len(raw)) + raw
    body += b"".join(struct.pack("<H", len(r)) + r for r in records)
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return path


def test_container_bounds_declared_counts(tmp_path: Path) -> None:
    """Frames and samples are checked against the file and each other before any decoding:
    a 200 KB file of empty frames is refused, not worth 179 MB of audio."""
    frames = 100_000
    bomb = _raw_sgc(tmp_path / "bomb.sgc", {**_HEADER, "samples": _samples(frames),
                                             "frames": frames}, [b""] * frames)
    assert bomb.stat().st_size < 210_000
    with pytest.raises(ContainerError, match="over the cap"):
        read_sgc(bomb)  # 5,600 s declared: over the one-hour default
    with pytest.raises(ContainerError, match="frames lost"):
        read_sgc(bomb, max_samples=None)
    # counts that do not fit the file or each other
    cases = {
        "holds at most": ({"samples": _samples(1000), "frames": 1000}, [b"abcd"] * 3),
        "cannot code": ({"samples": 10**9, "frames": 3}, [b"abcd"] * 3),
        "32-bit words": ({"samples": _samples(2), "frames": 2}, [b"abcd", b"abc"]),
    }
    for expected, (counts, records) in cases.items():
        path = _raw_sgc(tmp_path / "c.sgc", {**_HEADER, **counts}, records)
        with pytest.raises(ContainerError, match=expected):
            read_sgc(path, max_samples=None)
    # a few lost frames are concealment, as the format says
    header, back = read_sgc(_sgc(tmp_path, [b"abcd"] * 4 + [None] * 16))
    assert back.count(None) == 16
    with pytest.raises(ContainerError, match="is a directory"):
        read_sgc(tmp_path)
    with pytest.raises(ContainerError, match="cap on an .sgc"):
        read_sgc(bomb, max_bytes=1000)
    with pytest.raises(FileNotFoundError):
        write_sgc(tmp_path / "absent" / "x.sgc", {**_HEADER, "samples": _samples(1)}, [b"abcd"])


def test_decode_stream_is_decode_signal_and_stops_at_samples() -> None:
    cfg = CONFIGS["lowdelay"]
    echo = _Echo()
    rng = np.random.default_rng(1)
    signal = rng.uniform(-0.5, 0.5, 3000).astype(np.float32)
    packets = encode_signal(signal, cfg, echo.encode, _coder())
    frames = list(echo.frames)
    whole = decode_signal(packets, signal.size, cfg, echo.decode, _coder())
    echo.frames = list(frames)
    blocks = list(decode_stream(packets, signal.size, cfg, echo.decode, _coder()))
    assert all(b.size <= cfg.hop for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    echo.frames = list(frames)
    few = list(decode_stream(packets, 100, cfg, echo.decode, _coder()))
    assert sum(b.size for b in few) == 100 and len(few) == 1


def test_container_refuses_truncated_corrupt_and_foreign(tmp_path: Path) -> None:
    path = _sgc(tmp_path, [b"abcd", b"efgh" * 10])
    data = path.read_bytes()
    cases = {
        "truncated": data[:-9],
        "CRC mismatch": data[:-20] + bytes([data[-20] ^ 1]) + data[-19:],
        "not an .sgc": b"RIFF" + data[4:],
        "unexpected bytes": data[:-4] + b"zz" + struct.pack("<I", zlib.crc32(data[:-4] + b"zz")),
    }
    for expected, broken in cases.items():
        path.write_bytes(broken)
        with pytest.raises(ContainerError, match=expected):
            read_sgc(path)
    path.write_bytes(data[:6])
    with pytest.raises(ContainerError, match="truncated"):
        read_sgc(path)
    with pytest.raises(ContainerError, match="missing"):
        write_sgc(tmp_path / "b.sgc", {"codec": "wideband"}, [])


def test_multiband_filters_split_the_spectrum() -> None:
    filters = band_filters()
    assert filters.shape == (len(BAND_EDGES_HZ) - 1, 129)
    response = np.abs(np.fft.rfft(filters, 4096, axis=1))
    freqs = np.fft.rfftfreq(4096, 1 / CODEC_FS)
    for k, (lo, hi) in enumerate(zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)):
        centre = np.argmin(np.abs(freqs - (lo + hi) / 2))
        assert response[k, centre] == pytest.approx(1.0, abs=0.02)
        assert response[:, centre].sum() == pytest.approx(1.0, abs=0.02)  # bands tile


def test_band_weights_lift_the_quiet_high_band() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(1024) / CODEC_FS
    frames = np.stack([np.sin(2 * np.pi * 300 * t) + 0.01 * np.sin(2 * np.pi * 7000 * t + p)
                       for p in rng.uniform(0, 6, 64)])
    weights = band_weights(frames, band_filters())
    assert weights[-1] > 50 * weights[0]
    loss = MultiBandLoss(band_filters(), weights)
    x = torch.from_numpy(frames[:4, None, :].astype(np.float32))
    low = torch.from_numpy(np.sin(2 * np.pi * 300 * t)[None, None, :].astype(np.float32))
    # Dropping the quiet 7 kHz tone costs about as much as a large error in the loud band.
    assert float(loss(low.expand(4, 1, -1), x)) > 0.3 * float(loss(0.5 * x, x))
    assert float(torch.nn.functional.l1_loss(low.expand(4, 1, -1), x)) < 0.02


def test_calibrate_step_hits_the_target() -> None:
    rng = np.random.default_rng(0)
    scales = np.full((4, 64), 0.2)
    latents = np.tanh(rng.laplace(0, 0.2, (50, 4, 64))).astype(np.float32)
    seconds = 50 * 896 / CODEC_FS
    for kbps in (12.0, 24.0):
        step, got = calibrate_step(latents, scales, seconds, kbps, (0.02, 0.6))
        assert got == pytest.approx(kbps, rel=0.03)


@pytest.mark.slow
def test_train_codec_tiny_run_writes_weights_and_card(tmp_path: Path) -> None:
    card = train_codec(config="lowdelay", loss="multiband", kbps=(24.0,), steps=20,
                       out_dir=tmp_path, threads=1)
    saved = json.loads((tmp_path / "codec_lowdelay_multiband.json").read_text())
    assert saved["operating_points"][0]["kbps"] == 24.0 and card["seed"] == 0
    assert np.asarray(saved["laplace_scales"]).shape == CONFIGS["lowdelay"].latent_shape
    assert (tmp_path / "codec_lowdelay_multiband.pt").is_file()


def test_every_shipped_codec_has_weights_and_points() -> None:
    for key, specs in CODECS.items():
        card = specs.encoder.card()
        assert card.get("operating_points"), f"{key}: no card beside {specs.encoder.weights}"
        assert card["sha256"] == specs.encoder.weights_sha256()


@pytest.mark.parametrize("card", ["with scales", "without scales", "other weights"])
def test_entropy_tables_come_from_the_card_of_these_weights(card: str, tmp_path: Path) -> None:
    # A card carries the Laplace scales of its weights (a link end reads them without torch);
    # one without them, or written for other weights, has them read from the weights.
    specs = CODECS["lowdelay"]
    state = torch.load(specs.encoder.weights_path, map_location="cpu", weights_only=True)
    expected = state["log_scale"].exp().numpy().astype(np.float64)
    saved = specs.encoder.card()
    np.testing.assert_array_equal(np.asarray(saved["laplace_scales"]), expected)
    if card == "without scales":
        del saved["laplace_scales"]
    elif card == "other weights":
        saved["laplace_scales"] = np.ones_like(expected).tolist()
        saved["sha256"] = "0" * 64
    weights = tmp_path / specs.encoder.weights_path.name
    weights.write_bytes(specs.encoder.weights_path.read_bytes())
    weights.with_suffix(".json").write_text(json.dumps(saved))
    scales, points, sha = codec_tables(specs.with_weights(weights))
    np.testing.assert_array_equal(scales, expected)
    assert sha == specs.encoder.weights_sha256() and points


@needs_speech
@pytest.mark.parametrize("key", ["wideband", "lowdelay"])
def test_shipped_codec_codes_real_speech(key: str) -> None:
    speech = read_audio(SPEECH)
    scores, snrs = [], []
    with load_codec(key, backend="onnxruntime") as codec:
        for kbps in sorted(codec.points):
            coder = codec.coder(kbps=kbps)
            packets = encode_signal(speech, codec.config, codec.encoder, coder)
            got = measured_kbps(packets, speech.size / CODEC_FS)
            # Calibrated on TTS speech; real speech lands near the nominal rate.
            assert got == pytest.approx(kbps, rel=0.15)
            decoded = decode_signal(packets, speech.size, codec.config, codec.decoder, coder)
            assert decoded.shape == speech.shape
            scores.append(pesq_wb(speech, decoded))
            snrs.append(snr_db(speech, decoded))
        lsd = log_spectral_distance_db(speech, decoded)
    # A working codec, not a quality claim (that is `sigstream eval codec`'s): the waveform
    # comes back, more bits do not make it worse, and the low band is close.
    assert min(snrs) > 6.0 and snrs[-1] >= snrs[0] - 0.2
    assert all(s is not None and s > 1.1 for s in scores)
    assert lsd["0-2kHz"] < 15.0
    with pytest.raises(ValueError, match="operating point"):
        load_codec(key, backend="eager").coder(kbps=7.5)


def test_cli_codec_names_match_the_specs() -> None:
    # The CLI spells the codec keys out so `sigstream --help` does not load torch.
    from engines.codec.losses import LOSSES
    from stream.paths.codec.commands import CODEC_CONFIGS, CODEC_LOSSES, CODEC_MODELS

    assert set(CODEC_MODELS) == set(CODECS)
    assert set(CODEC_CONFIGS) == set(CONFIGS) and set(CODEC_LOSSES) == set(LOSSES)
