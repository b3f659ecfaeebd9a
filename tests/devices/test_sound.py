"""Sound devices through real PortAudio streams on an ALSA ``file`` PCM (no mock).

The device is :class:`conftest.FileDevice` (its docstring says what the plugin does).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.signal import resample_poly
from sound_device import FileDevice

from devices.audio import read_audio
from devices.frames import DeviceError, Frame, SourceFileError
from devices.microphone import Microphone
from devices.sound import SoundDevice, StreamResampler, find_device, format_devices, list_devices
from devices.speaker import Speaker

FRONT_CENTER = Path("/usr/share/sounds/alsa/Front_Center.wav")  # 1.43 s of speech, 48 kHz
BLOCK = 320  # 20 ms at 16 kHz
BLOCK_NS = 20_000_000


@pytest.fixture(scope="module")
def speech16k() -> np.ndarray:
    if not FRONT_CENTER.is_file():
        pytest.skip(f"no {FRONT_CENTER} (Debian alsa-utils)")
    return read_audio(FRONT_CENTER)


@contextmanager
def recording(device: FileDevice, **kwargs: Any) -> Iterator[Microphone]:
    """An open Microphone on the file device, closed after an unplug (which frees a capture
    thread that waits on the used-up infile)."""
    mic = Microphone(FileDevice.NAME, **kwargs)
    mic.open()
    try:
        yield mic
    finally:
        device.unplug()
        mic.close()


def _read_frames(mic: Microphone, n: int) -> list[Frame]:
    frames: list[Frame] = []
    for _ in range(n):
        frame = mic.read(timeout_s=2.0)
        assert frame is not None, f"no frame {len(frames)} within 2 s"
        frames.append(frame)
    return frames


def _wait_for(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _pad_to(x: np.ndarray, multiple: int) -> np.ndarray:
    return np.pad(x, (0, -x.size % multiple))


def _constant_blocks(n: int) -> list[np.ndarray]:
    """Block k holds (k + 1) / 64 everywhere: exact in float32, and easy to tell apart."""
    return [np.full(BLOCK, (k + 1) / 64, dtype="<f4") for k in range(n)]


def _start_of(played: np.ndarray, signal: np.ndarray) -> int:
    """Where ``signal`` starts in ``played``, which is silence before it."""
    start = int(np.argmax(played != 0) - np.argmax(signal != 0))
    assert start >= 0 and not played[:start].any()
    return start


# -- listing and picking ------------------------------------------------------------------------


def test_list_devices_shows_the_file_device(sound_device: FileDevice) -> None:
    devices = {d.name: d for d in list_devices()}
    fixture, spare = devices[FileDevice.NAME], devices[FileDevice.SPARE]
    assert fixture.hostapi == "ALSA"
    assert fixture.max_input_channels > 0 and fixture.max_output_channels > 0
    assert fixture.default_samplerate > 0
    assert spare.max_input_channels == 0 and spare.max_output_channels > 0
    assert any(d.is_default_output for d in devices.values())
    text = format_devices(list(devices.values()))
    line = next(row for row in text.splitlines() if row.endswith(FileDevice.NAME))
    assert line.split()[0] == str(fixture.index) and "ALSA" in line
    assert "default input / output" in text
    assert "Pick a device by its index" in text.splitlines()[-1]


def test_format_devices_without_devices_says_what_to_check() -> None:
    assert "no sound devices found" in format_devices([])
    assert "libportaudio2" in format_devices([])
    one = SoundDevice(3, "USB Headset", "ALSA", 1, 2, 48000.0, True, False)
    text = format_devices([one])
    assert "    3     1*     2      48000  ALSA      USB Headset" in text
    assert "'usb'" in text


def test_find_device_by_index_name_and_errors(sound_device: FileDevice) -> None:
    index = next(d.index for d in list_devices() if d.name == FileDevice.NAME)
    assert find_device(index, "input") == index
    assert find_device(f" {index} ", "output") == index
    assert find_device("FIXTURE", "input") == index
    assert find_device("sigstream", "input") == index  # the spare has no input
    assert find_device(FileDevice.NAME, "output") == index  # a whole name wins
    assert find_device(None, "input") is None
    with pytest.raises(DeviceError, match="matches 2 output devices") as several:
        find_device("sigstream", "output")
    assert FileDevice.NAME in str(several.value) and FileDevice.SPARE in str(several.value)
    with pytest.raises(DeviceError, match="no sound device matches 'nonesuch'") as none:
        find_device("nonesuch", "input")
    assert FileDevice.NAME in str(none.value)  # the candidates
    with pytest.raises(DeviceError, match="has no input channels"):
        find_device("spare", "input")
    with pytest.raises(DeviceError, match="no sound device 99"):
        find_device(99, "output")
    with pytest.raises(ValueError, match="kind"):
        find_device(index, "sideways")  # type: ignore[arg-type]


def test_constructors_validate_and_do_no_io() -> None:
    Microphone("no such device")  # nothing is opened until open()
    Speaker("no such device")
    with pytest.raises(ValueError, match="block"):
        Microphone(block=0)
    with pytest.raises(ValueError, match="dtype"):
        Microphone(dtype="int24")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefill_blocks"):
        Speaker(queue_blocks=2, prefill_blocks=3)
    with pytest.raises(ValueError, match="device_fs"):
        Speaker(device_fs=0)


def test_opening_a_missing_device_is_a_device_error(sound_device: FileDevice) -> None:
    with pytest.raises(DeviceError, match="nonesuch"):
        Microphone("nonesuch").open()
    with pytest.raises(DeviceError, match="nonesuch"):
        Speaker("nonesuch").open()
    with pytest.raises(DeviceError, match="not open"):
        Speaker().write(np.zeros(BLOCK, np.float32))


# -- microphone ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_microphone_records_speech_sample_exactly(
    sound_device: FileDevice, speech16k: np.ndarray, dtype: str
) -> None:
    if dtype == "int16":
        raw = _pad_to(np.clip(np.round(speech16k * 32768), -32768, 32767).astype("<i2"), BLOCK)
        expected = raw.astype(np.float32) / 32768.0  # int16 quantisation, nothing else
    else:
        raw = _pad_to(speech16k.astype("<f4"), BLOCK)
        expected = raw  # bit-exact
    n_blocks = raw.size // BLOCK
    sound_device.feed(raw)
    t_open_ns = time.time_ns()
    # The device delivers the whole file at once (it has no clock): the queue must hold it.
    with recording(sound_device, dtype=dtype, queue_blocks=n_blocks + 2) as mic:
        frames = _read_frames(mic, n_blocks)
        assert mic.read(timeout_s=0.05) is None  # infile used up: the device waits
        stats = mic.stats()
    got = np.concatenate([f.data for f in frames])
    np.testing.assert_array_equal(got, expected)
    assert all(f.data.dtype == np.float32 and f.data.shape == (BLOCK,) for f in frames)
    assert all(f.fs == 16000.0 for f in frames)
    assert stats == {"blocks": n_blocks, "samples": n_blocks * BLOCK, "overruns": 0,
                     "dropped_blocks": 0, "device_overflows": 0, "queued_blocks": 0}
    gaps = np.diff([f.t_ns for f in frames])
    assert np.all(np.abs(gaps - BLOCK_NS) <= 1)  # the sample clock
    assert abs(frames[0].t_ns - t_open_ns) < 1e9


def test_microphone_queue_is_bounded_and_reading_resumes(sound_device: FileDevice) -> None:
    blocks = _constant_blocks(20)
    sound_device.feed(np.concatenate(blocks))
    with recording(sound_device, queue_blocks=2) as mic:
        _wait_for(lambda: mic.dropped_blocks >= 18)
        time.sleep(0.05)  # nothing more comes: the infile is used up
        assert mic.overruns == mic.stats()["overruns"] == 18
        first = _read_frames(mic, 2)  # the two that fitted: the oldest
        assert [f.data[0] for f in first] == [1 / 64, 2 / 64]
        sound_device.feed(np.full(BLOCK, 0.5, dtype="<f4"))  # 1280 bytes: an atomic write
        later = mic.read(timeout_s=2.0)
    assert later is not None and np.all(later.data == 0.5)
    assert later.t_ns - first[0].t_ns == pytest.approx(20 * BLOCK_NS, abs=1)  # the gap shows


def test_microphone_raises_when_the_device_goes_away(sound_device: FileDevice) -> None:
    sound_device.feed(np.zeros(3 * BLOCK, dtype="<f4"))
    with recording(sound_device) as mic:
        assert len(_read_frames(mic, 3)) == 3
        sound_device.unplug()
        start = time.monotonic()
        with pytest.raises(DeviceError, match="stopped capturing"):
            for _ in range(10):  # a stale block may come first
                mic.read()  # no timeout: must notice the dead stream, not wait forever
        assert time.monotonic() - start < 60.0  # noticed (a missed death waits forever)
        with pytest.raises(DeviceError, match="stopped capturing"):
            mic.read(timeout_s=0.0)


def test_microphone_resamples_a_48k_device(sound_device: FileDevice) -> None:
    x48 = read_audio(FRONT_CENTER, fs=48000) if FRONT_CENTER.is_file() else None
    if x48 is None:
        pytest.skip(f"no {FRONT_CENTER}")
    raw = _pad_to(x48, 3 * BLOCK).astype("<f4")
    sound_device.feed(raw)
    expected = resample_poly(raw.astype(np.float64), 1, 3)
    # Everything but the resampler's look-ahead comes out.
    n_frames = (raw.size // 3 - StreamResampler(48000, 16000).delay_samples) // BLOCK
    with recording(sound_device, device_fs=48000, queue_blocks=raw.size // (3 * BLOCK) + 2) as mic:
        frames = _read_frames(mic, n_frames)
        assert mic.device_fs == 48000 and mic.overruns == 0
    got = np.concatenate([f.data for f in frames])
    np.testing.assert_allclose(got, expected[:got.size], rtol=0, atol=1e-6)
    assert np.all(np.abs(np.diff([f.t_ns for f in frames]) - BLOCK_NS) <= 1)


# -- speaker ------------------------------------------------------------------------------------


def test_speaker_plays_speech_into_the_file(
    sound_device: FileDevice, speech16k: np.ndarray
) -> None:
    n_blocks = -(-speech16k.size // BLOCK)
    sizes = itertools.cycle([BLOCK, 1, 777, 160, 0, 2000])  # a writer's blocks of any size
    # Playout starts once everything is queued, so a slow writer cannot cause an underrun.
    with Speaker(FileDevice.NAME, queue_blocks=n_blocks + 2, prefill_blocks=n_blocks) as spk:
        i = 0
        while i < speech16k.size:
            n = next(sizes)
            spk.write(speech16k[i:i + n])
            i += n
        latency_s = spk.latency_s
    played = sound_device.played()
    start = _start_of(played, speech16k)
    np.testing.assert_array_equal(played[start:start + speech16k.size], speech16k)
    assert not played[start + speech16k.size:].any()
    assert spk.underruns == 0 and spk.overruns == 0
    assert spk.samples_played == spk.samples_written == speech16k.size
    assert 0 < latency_s < 1
    assert spk.stats()["buffered_s"] == 0


def test_speaker_counts_underruns_when_the_writer_is_late(sound_device: FileDevice) -> None:
    blocks = _constant_blocks(3)
    with Speaker(FileDevice.NAME, prefill_blocks=1) as spk:
        for block in blocks:
            spk.write(block)
        _wait_for(lambda: spk.samples_played == 3 * BLOCK)
        before = spk.underruns  # some may already be counted: the writer is no faster
        _wait_for(lambda: spk.underruns > before)  # the writer goes quiet: silence is played
        assert spk.stats()["underruns"] == spk.underruns
    played = sound_device.played()
    np.testing.assert_array_equal(played[played != 0], np.concatenate(blocks))


def test_speaker_drops_the_oldest_audio_rather_than_block_the_writer(
    sound_device: FileDevice,
) -> None:
    sound_device.paused = True  # the device takes nothing: its buffers fill, then ours
    blocks = _constant_blocks(40)
    with Speaker(FileDevice.NAME, queue_blocks=2, prefill_blocks=1, write_timeout_s=0.01) as spk:
        slowest_s = 0.0
        for block in blocks:
            start = time.monotonic()
            spk.write(block)
            slowest_s = max(slowest_s, time.monotonic() - start)
        assert slowest_s < 30.0  # never blocked on the paused device (that waits forever)
        assert spk.overruns > 0 and spk.dropped_samples == spk.overruns * BLOCK
        sound_device.paused = False
    played = sound_device.played()
    levels = [float(v) for v, _ in itertools.groupby(played[played != 0])]
    assert levels[-2:] == [39 / 64, 40 / 64]  # the newest audio was kept
    assert len(levels) == 40 - spk.overruns


def test_speaker_resamples_for_a_48k_device(
    sound_device: FileDevice, speech16k: np.ndarray
) -> None:
    sound_device.pace_bytes_s = 4 * 48_000 * 4
    n_blocks = -(-speech16k.size // BLOCK)
    with Speaker(FileDevice.NAME, device_fs=48000, queue_blocks=n_blocks + 4,
                 prefill_blocks=n_blocks) as spk:
        for i in range(0, speech16k.size, BLOCK):
            spk.write(speech16k[i:i + BLOCK])
        assert spk.device_fs == 48000
    played = sound_device.played()
    expected = resample_poly(speech16k.astype(np.float64), 3, 1)  # close() flushed the tail
    start = _start_of(played, expected)
    np.testing.assert_allclose(played[start:start + expected.size], expected, rtol=0, atol=1e-6)
    assert not played[start + expected.size:].any()
    assert spk.samples_played == speech16k.size


def test_speaker_raises_when_the_device_goes_away(sound_device: FileDevice) -> None:
    with Speaker(FileDevice.NAME, prefill_blocks=1) as spk:
        spk.write(np.zeros(BLOCK, np.float32))
        sound_device.unplug()
        with pytest.raises(DeviceError, match="stopped playing"):
            for _ in range(200):
                spk.write(np.zeros(BLOCK, np.float32))
                time.sleep(0.01)
    # close() after the failure released the device quietly


# -- resampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fs_in", "fs_out"),
    [(16000, 48000), (48000, 16000), (44100, 16000), (16000, 44100), (16000, 16000)],
)
def test_stream_resampler_block_by_block_equals_resample_poly(fs_in: int, fs_out: int) -> None:
    rng = np.random.default_rng(fs_in + fs_out)
    x = rng.uniform(-1, 1, 8000)
    resampler = StreamResampler(fs_in, fs_out)
    out, i = [], 0
    while i < x.size:
        n = int(rng.choice([0, 1, 7, 160, 320, 1000]))
        out.append(resampler.process(x[i:i + n]))
        i += n
    out.append(resampler.flush())
    g = np.gcd(fs_in, fs_out)
    expected = resample_poly(x, fs_out // g, fs_in // g)
    got = np.concatenate(out)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_stream_resampler_has_no_clicks_at_block_edges() -> None:
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    whole = resample_poly(tone, 3, 1)
    resampler = StreamResampler(16000, 48000)
    blocks = np.split(tone, 50)
    stream = np.concatenate([resampler.process(b) for b in blocks] + [resampler.flush()])
    naive = np.concatenate([resample_poly(b, 3, 1) for b in blocks])
    assert np.abs(stream - whole).max() < 1e-6
    assert np.abs(naive - whole).max() > 0.05  # why the state matters: per-block edges click


def test_stream_resampler_reset_starts_a_new_signal() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.uniform(-1, 1, 500), rng.uniform(-1, 1, 900)
    resampler = StreamResampler(48000, 16000)
    resampler.process(first)
    resampler.reset()
    got = np.concatenate([resampler.process(second), resampler.flush()])
    np.testing.assert_allclose(got, resample_poly(second, 1, 3), rtol=0, atol=1e-6)
    assert resampler.delay_samples > 0
    with pytest.raises(ValueError, match="rates"):
        StreamResampler(0, 16000)


def test_cli_devices_lists_the_file_device(sound_device: FileDevice) -> None:
    run = subprocess.run([sys.executable, "-m", "stream.cli", "devices"], capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, "ALSA_CONFIG_PATH": str(sound_device.config)})
    assert run.returncode == 0, run.stderr
    assert FileDevice.NAME in run.stdout and "Pick a device" in run.stdout


def test_wav_sink_streams_and_writes_atomically(tmp_path: Path) -> None:
    from devices.audio import WavSink

    path = tmp_path / "out.wav"
    with WavSink(path) as sink:
        for _ in range(5):
            sink.write(np.full(1000, 0.25, np.float32))
        assert not path.exists()  # only the .part file until close
    assert sink.samples_written == 5000
    np.testing.assert_allclose(read_audio(path), 0.25, atol=1e-4)
    with pytest.raises(ValueError), WavSink(tmp_path / "aborted.wav") as sink:
        sink.write(np.zeros(10, np.float32))
        raise ValueError("boom")
    assert not list(tmp_path.glob("aborted*"))
    with pytest.raises(DeviceError, match="does not exist"):
        WavSink(tmp_path / "absent" / "x.wav").open()
    with pytest.raises(SourceFileError, match="is a directory"):
        read_audio(tmp_path)
    with pytest.raises(SourceFileError, match="over the"):
        read_audio(path, max_bytes=1000)
