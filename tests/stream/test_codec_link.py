"""The codec link: the receiver's jitter buffer, concealment and validation in-process, and the
whole link as two real processes over TCP (file in, file out; offline encode/decode CLI)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from service_client import start_logged

from devices.audio import CODEC_FS, read_audio, write_audio
from engines.codec.codec import Codec, decode_signal, encode_signal, load_codec
from stream.paths.codec.receiver import CodecReceiver
from stream.wire import data_message, encode

SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")
pytestmark = pytest.mark.skipif(not SPEECH.is_file(), reason="alsa-utils speech not installed")
KBPS = 16.0


@pytest.fixture(scope="module")
def codec() -> Any:
    with load_codec("wideband", backend="eager") as c:
        yield c


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_audio(SPEECH)


class ListSink:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def write(self, block: np.ndarray) -> None:
        self.blocks.append(block.copy())

    def close(self) -> None:
        pass

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.blocks)


def _frames(codec: Codec, packet: bytes, seq: int, **override: Any) -> list[bytes]:
    c = codec.config
    header = {"fs": float(CODEC_FS), "codec": codec.key, "model": codec.model_id,
              "step": codec.step_for(KBPS), "kbps": KBPS, "frame": c.frame, "hop": c.hop,
              **override}
    return encode(data_message("codec", "link", seq, np.frombuffer(packet, np.uint8),
                               t_ns=1, **header))


def _packets(codec: Codec, speech: np.ndarray) -> list[bytes]:
    """The packets of ``speech`` coded offline (batches), for comparison with the link."""
    return encode_signal(speech, codec.config, codec.encoder, codec.coder(kbps=KBPS))


def _run(receiver: CodecReceiver, arrivals: list[tuple[float, list[bytes]]], hop_s: float,
         until: float) -> None:
    """Feed messages at their arrival times and let playout run on a simulated clock."""
    t = 0.0
    pending = sorted(arrivals, key=lambda a: a[0])
    while t <= until:
        while pending and pending[0][0] <= t:
            receiver.receive(pending.pop(0)[1], now=t)
        receiver.play_due(now=t)
        t += hop_s / 4


def test_in_order_packets_play_exactly_the_offline_decode(codec: Codec, speech: np.ndarray
                                                          ) -> None:
    packets = _packets(codec, speech)
    sink = ListSink()
    rx = CodecReceiver(codec, sink, jitter_ms=40, stream="link")
    hop_s = codec.config.hop / CODEC_FS
    arrivals = [(k * hop_s, _frames(codec, p, 100 + k)) for k, p in enumerate(packets)]
    arrivals.append((len(packets) * hop_s, _frames(codec, b"", 100 + len(packets), end=True)))
    _run(rx, arrivals, hop_s, len(packets) * hop_s + 0.2)
    assert rx.ended
    offline = decode_signal(packets, speech.size, codec.config, codec.decoder,
                            codec.coder(kbps=KBPS))
    out = sink.samples
    np.testing.assert_allclose(out[:speech.size], offline, atol=1e-5)
    assert rx.stats.counters["played"] == len(packets)
    assert "concealed" not in rx.stats.counters and not rx.stats.errors


def test_reordered_duplicated_late_and_lost_packets(codec: Codec, speech: np.ndarray) -> None:
    packets = _packets(codec, speech)
    hop_s = codec.config.hop / CODEC_FS
    arrivals = [(k * hop_s, _frames(codec, p, k)) for k, p in enumerate(packets)]
    arrivals[3] = (arrivals[4][0] + 0.005, arrivals[3][1])  # overtaken by the next one
    arrivals.append((arrivals[6][0] + 0.001, arrivals[6][1]))          # duplicate
    lost = arrivals.pop(10)                                             # lost ...
    arrivals.append((lost[0] + 0.5, lost[1]))                           # ... then far too late
    arrivals.append((len(packets) * hop_s, _frames(codec, b"", len(packets), end=True)))
    sink = ListSink()
    rx = CodecReceiver(codec, sink, jitter_ms=80, stream="link")
    _run(rx, arrivals, hop_s, len(packets) * hop_s + 0.6)
    assert rx.ended
    c = rx.stats.counters
    assert c["duplicate"] == 1 and c["late"] == 1 and c["concealed"] == 1
    assert c["played"] == len(packets) - 1
    # Played in order, frame 10 concealed: exactly what decoding with that frame lost gives.
    expected = decode_signal([None if k == 10 else p for k, p in enumerate(packets)],
                             speech.size, codec.config, codec.decoder, codec.coder(kbps=KBPS))
    np.testing.assert_allclose(sink.samples[:speech.size], expected, atol=1e-5)


def test_a_packet_from_a_far_seq_neither_hangs_nor_holds_the_stream(codec: Codec,
                                                                    speech: np.ndarray) -> None:
    # A valid-looking packet with seq 2**63 - 1 amid a stream: a resync to it and back, then a
    # backlog skip across the gap, must cost nothing (a loop over the seqs in between hung).
    packets = _packets(codec, speech)[:12]
    hop_s = codec.config.hop / CODEC_FS
    arrivals = [(k * hop_s, _frames(codec, p, k)) for k, p in enumerate(packets)]
    arrivals.insert(3, (3 * hop_s - 0.001, _frames(codec, packets[3], 2**63 - 1)))
    arrivals.append((len(packets) * hop_s, _frames(codec, b"", len(packets), end=True)))
    rx = CodecReceiver(codec, ListSink(), jitter_ms=40, stream="link")
    _run(rx, arrivals, hop_s, len(packets) * hop_s + 0.5)
    assert rx.ended
    c = rx.stats.counters
    assert c["messages"] == len(arrivals)
    assert c["messages"] == c["packets_received"] + c["end_markers"] + sum(rx.stats.errors.values())


def test_an_end_marker_after_lost_frames_ends_the_stream(codec: Codec, speech: np.ndarray
                                                          ) -> None:
    # The last frames never come, the end marker does, then silence: what is missing up to the
    # end is concealed and the stream ends, rather than waiting for a sender that is done.
    packets = _packets(codec, speech)
    hop_s = codec.config.hop / CODEC_FS
    assert len(packets) * hop_s > 1.0  # the missing frames fall due after the sender's silence
    arrivals = [(k * hop_s, _frames(codec, p, k)) for k, p in enumerate(packets[:6])]
    arrivals.append((6 * hop_s, _frames(codec, b"", len(packets), end=True)))
    rx = CodecReceiver(codec, ListSink(), jitter_ms=40, stream="link")
    _run(rx, arrivals, hop_s, len(packets) * hop_s + 2.0)
    assert rx.ended
    c = rx.stats.counters
    assert c["played"] == 6 and c["concealed"] == len(packets) - 6


def test_bad_messages_are_counted_and_never_played(codec: Codec, speech: np.ndarray) -> None:
    packets = _packets(codec, speech)[:6]
    good = [_frames(codec, p, k) for k, p in enumerate(packets)]
    header = msgpack.unpackb(good[0][0])
    bad = {
        "frame_count": [good[0][0]],
        "bad_msgpack": [b"\xc1not msgpack", b""],
        "wrong_kind": encode(data_message("ecg", "link", 0, np.zeros(4, np.float32), fs=250.0)),
        "codec_mismatch": _frames(codec, packets[0], 1, model="wideband@000000000000"),
        "bad_format": _frames(codec, packets[0], 1, fs=8000.0),
        "bad_step": _frames(codec, packets[0], 1, step=1e9),
        "bad_dtype": [msgpack.packb({**header, "dtype": "float32", "shape": [1]}),
                      np.zeros(1, np.float32).tobytes()],
        "oversize": [msgpack.packb({**header, "shape": [20000]}), b"\0" * 20000],
        "wrong_stream": encode(data_message("codec", "other", 0, np.zeros(4, np.uint8),
                                            **{k: v for k, v in header.items() if k not in (
                                                "v", "kind", "stream", "seq", "t_ns", "dtype",
                                                "shape")})),
    }
    sink = ListSink()
    rx = CodecReceiver(codec, sink, jitter_ms=0, stream="link")
    hop_s = codec.config.hop / CODEC_FS
    for k, frames in enumerate(good):
        rx.receive(frames, now=k * hop_s)
        for junk in bad.values():
            rx.receive(junk, now=k * hop_s)
        rx.play_due(now=k * hop_s)
    rx.finish()
    for code in bad:
        assert rx.stats.errors.get(code, 0) >= 1, code
    assert rx.stats.counters["played"] == len(good)  # the good stream was not disturbed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape_when(url: str, needle: str, timeout_s: float) -> str:
    """The receiver's /metrics once it shows ``needle`` (it starts serving after its engine
    loads, and counts a frame once one is played)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
            if needle in text:
                return text
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never showed {needle}"
        time.sleep(0.2)


def _start(cmd: list[str], ready: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start a link end and wait until it logs ``ready`` (listening, capturing)."""
    return start_logged(cmd, ready, **kwargs)[0]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream.cli", *args]


def test_link_between_two_processes_file_to_file(tmp_path: Path, speech: np.ndarray,
                                                 codec: Codec) -> None:
    """Speech, a second of digital silence, then speech clipped hard, through the link."""
    port = _free_port()
    wav_in, wav_out = tmp_path / "in.wav", tmp_path / "out.wav"
    silence = np.zeros(CODEC_FS, np.float32)
    clipped = np.clip(speech * 8, -1, 1)
    signal = np.concatenate([speech, silence, clipped])
    write_audio(wav_in, signal)
    metrics_port = _free_port()
    # A jitter buffer deeper than a loaded machine's stalls (and shallower than the receiver's
    # 2 s resync window): this test is about the data path (every packet accounted for,
    # decoded as offline), not about meeting the default 40 ms.
    rx = _start(_cli("run", "codec-rx", "--bind", f"tcp://127.0.0.1:{port}",
                     "--output", str(wav_out), "--backend", "eager", "--jitter-ms", "1500",
                     "--metrics-port", str(metrics_port),
                     "--report", str(tmp_path / "rx.json"), "--seconds", "60"), "listening on")
    try:
        tx = subprocess.Popen(_cli("run", "codec-tx", "--input", str(wav_in), "--connect",
                                   f"tcp://127.0.0.1:{port}", "--kbps", str(KBPS), "--backend",
                                   "eager", "--report", str(tmp_path / "tx.json")),
                              stderr=subprocess.PIPE, text=True)
        metrics = _scrape_when(f"http://127.0.0.1:{metrics_port}/metrics",
                               "sigstream_codec_played_total", timeout_s=120)
        assert "sigstream_codec_latency_seconds_bucket" in metrics
        _, err = tx.communicate(timeout=120)
        assert tx.returncode == 0, err[-2000:]
        assert rx.wait(timeout=120) == 0
    finally:
        rx.kill()
    rx_report = json.loads((tmp_path / "rx.json").read_text())
    tx_report = json.loads((tmp_path / "tx.json").read_text())
    # Every message and packet accounted for: TCP loses none, each was played, late
    # (its slot concealed) or skipped (a backlog beyond the buffer). Whether a packet met its
    # playout deadline depends on the machine, not on the link: with a 1.5 s buffer none is
    # late or skipped unless the machine stalled for that long, and only then is the output
    # compared with coding the file offline sample for sample.
    sent = tx_report["packets_sent"]
    assert not rx_report["errors"]
    assert rx_report["messages"] == rx_report["packets_received"] + rx_report["end_markers"]
    assert rx_report["packets_received"] == sent and rx_report["end_markers"] == 1
    late, skipped = rx_report.get("late", 0), rx_report.get("skipped", 0)
    assert rx_report["played"] + late + skipped == sent, json.dumps(rx_report)
    assert rx_report["latency_ms"]["p50"] > 0  # measured (its size depends on the load)
    assert tx_report["clipped_samples"] > 1000  # counted, and coded like any other input
    if late or skipped or rx_report.get("concealed", 0):
        return  # a stalled machine: its slots were concealed, so the samples differ
    out = read_audio(wav_out)
    signal = read_audio(wav_in)  # what the sender read: 16-bit
    offline = decode_signal(_packets(codec, signal), signal.size, codec.config, codec.decoder,
                            codec.coder(kbps=KBPS))
    # The same samples as coding the file offline, within the WAV's 16-bit rounding.
    np.testing.assert_allclose(out[:signal.size], np.clip(offline, -1, 1), atol=2e-4)
    quiet = out[speech.size + 2000:speech.size + CODEC_FS - 2000]
    assert np.sqrt(np.mean(quiet**2)) < 0.01  # silence stays (nearly) silent


def test_offline_cli_encode_decode_and_bad_files(tmp_path: Path, speech: np.ndarray) -> None:
    wav, sgc, back = tmp_path / "in.wav", tmp_path / "x.sgc", tmp_path / "back.wav"
    write_audio(wav, speech)
    run = subprocess.run(_cli("codec", "encode", str(wav), str(sgc), "--kbps", "16",
                              "--backend", "eager"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "kbps measured" in run.stdout
    run = subprocess.run(_cli("codec", "decode", str(sgc), str(back), "--backend", "eager"),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    decoded = read_audio(back)
    assert decoded.size == speech.size
    info = json.loads(subprocess.run(_cli("codec", "info", str(sgc)), capture_output=True,
                                     text=True, timeout=60).stdout)
    assert info["codec"] == "wideband" and 8 < info["measured_kbps"] < 24

    wav48 = tmp_path / "in48k.wav"  # another sample rate is resampled, not refused
    write_audio(wav48, read_audio(SPEECH, fs=48_000), fs=48_000)
    run = subprocess.run(_cli("codec", "encode", str(wav48), str(tmp_path / "48.sgc"),
                              "--backend", "eager"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(subprocess.run(_cli("codec", "info", str(tmp_path / "48.sgc")),
                                     capture_output=True, text=True,
                                     timeout=60).stdout)["samples"] == speech.size

    stereo = tmp_path / "stereo.wav"
    import soundfile

    soundfile.write(stereo, np.stack([speech, speech], axis=1), CODEC_FS)
    truncated = tmp_path / "cut.sgc"
    truncated.write_bytes(sgc.read_bytes()[:-50])
    for args, message in (
        (("encode", str(stereo), str(tmp_path / "s.sgc")), "channels"),
        (("encode", str(tmp_path / "missing.wav"), str(tmp_path / "m.sgc")), "no audio file"),
        (("encode", str(sgc), str(tmp_path / "n.sgc")), "not a readable audio file"),
        (("encode", str(wav), str(tmp_path / "k.sgc"), "--kbps", "7"), "operating point"),
        (("decode", str(truncated), str(tmp_path / "t.wav")), "truncated"),
        (("decode", str(wav), str(tmp_path / "w.wav")), "not an .sgc file"),
    ):
        run = subprocess.run(_cli("codec", *args, "--backend", "eager")
                             if args[0] != "info" else _cli("codec", *args),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)


def _without_silence(x: np.ndarray, run: int = 64) -> np.ndarray:
    """``x`` without runs of >= ``run`` exact zeros (a speaker's priming and underruns)."""
    zero = x == 0
    starts = np.flatnonzero(np.diff(np.concatenate([[0], zero.astype(np.int8), [0]])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([[0], zero.astype(np.int8), [0]])) == -1)
    keep = np.ones(x.size, bool)
    for a, b in zip(starts, ends, strict=True):
        if b - a >= run:
            keep[a:b] = False
    return x[keep]


def test_link_from_microphone_to_speaker_on_real_sound_devices(
        tmp_path: Path, speech: np.ndarray, codec: Codec) -> None:
    """A WAV goes in through the 'mic' (an ALSA file device), over TCP between two processes,
    and comes out of the 'speaker' (another one), decoded exactly as offline."""
    from sound_device import FileDevice, portaudio_or_skip

    portaudio_or_skip()
    (tmp_path / "mic").mkdir()
    (tmp_path / "spk").mkdir()
    mic = FileDevice(tmp_path / "mic")
    speaker = FileDevice(tmp_path / "spk", pace_bytes_s=CODEC_FS * 4)  # real time, float32
    port = _free_port()
    block = 320  # the microphone's capture block: feeds are whole blocks (see FileDevice)
    padded = np.concatenate([speech, np.zeros(-speech.size % block, np.float32)])
    seconds = padded.size / CODEC_FS
    procs: list[subprocess.Popen[Any]] = []
    try:
        rx = _start(
            _cli("run", "codec-rx", "--bind", f"tcp://127.0.0.1:{port}", "--output", "speaker",
                 "--device", FileDevice.NAME, "--device-latency", "low", "--until-end",
                 "--backend", "eager",
                 # A deep jitter buffer: this test is about the data path, on a busy machine.
                 "--jitter-ms", "1000", "--report", str(tmp_path / "rx.json"),
                 "--seconds", "60"), "listening on",
            env={**os.environ, "ALSA_CONFIG_PATH": str(speaker.config)})
        procs.append(rx)
        tx = _start(
            _cli("run", "codec-tx", "--input", "mic", "--device", FileDevice.NAME,
                 "--connect", f"tcp://127.0.0.1:{port}", "--seconds", f"{seconds + 5:.1f}",
                 "--backend", "eager", "--report", str(tmp_path / "tx.json")),
            "capturing from", env={**os.environ, "ALSA_CONFIG_PATH": str(mic.config)})
        procs.append(tx)
        # The file device has no clock: the talker speaks at the speaking rate.
        start = time.monotonic()
        for k, i in enumerate(range(0, padded.size, block)):
            mic.feed(padded[i:i + block].astype("<f4"))
            time.sleep(max(0.0, start + (k + 1) * block / CODEC_FS - time.monotonic()))
        assert rx.wait(timeout=60) == 0
        mic.unplug()  # lets the sender's microphone close
        assert tx.wait(timeout=30) == 0
        played = speaker.played()
    finally:
        for proc in procs:
            proc.kill()
        mic.unplug()
        speaker.unplug()
    rx_report = json.loads((tmp_path / "rx.json").read_text())
    tx_report = json.loads((tmp_path / "tx.json").read_text())
    # Every packet accounted for: played, late (its slot concealed) or skipped. Real-time
    # deadlines (the sender's capture queue, the receiver's playout) depend on the machine:
    # only where all were met is the output compared with coding offline.
    late, skipped = rx_report.get("late", 0), rx_report.get("skipped", 0)
    assert rx_report["played"] + late + skipped == tx_report["packets_sent"], rx_report
    assert not rx_report["errors"]
    if tx_report["device"]["overruns"] or late or skipped:
        return
    offline = decode_signal(_packets(codec, padded), padded.size, codec.config, codec.decoder,
                            codec.coder(kbps=KBPS))
    got, want = _without_silence(played), _without_silence(offline)
    assert got.size >= want.size - 64
    np.testing.assert_allclose(got[:want.size], want[:got.size], atol=1e-5)


def test_link_ends_refuse_what_they_cannot_use_in_one_line(tmp_path: Path,
                                                          speech: np.ndarray) -> None:
    import soundfile

    stereo, mono = tmp_path / "stereo.wav", tmp_path / "mono.wav"
    soundfile.write(stereo, np.stack([speech, speech], axis=1), CODEC_FS)
    write_audio(mono, speech)
    for args, message in (
        (("codec-tx", "--input", str(stereo)), "channels"),
        (("codec-tx", "--input", str(tmp_path / "nope.wav")), "no audio file"),
        (("codec-tx", "--input", str(mono), "--kbps", "7"), "operating point"),
        (("codec-tx", "--input", "mic", "--device", "no-such-sound-card"), "device"),
        (("codec-rx", "--output", "speaker", "--device", "no-such-sound-card"), "device"),
    ):
        endpoint = ("--connect", "tcp://127.0.0.1:9") if args[0] == "codec-tx" else (
            "--bind", f"tcp://127.0.0.1:{_free_port()}")
        run = subprocess.run(_cli("run", *args, *endpoint, "--backend", "eager"),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, (args, run.stderr[-2000:])
        assert message in run.stderr.splitlines()[-1], (args, run.stderr[-2000:])
