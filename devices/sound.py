"""Sound devices through PortAudio: listing and picking them, and what the two ends of an audio
link (:mod:`devices.microphone`, :mod:`devices.speaker`) share.

    list_devices / format_devices    what PortAudio sees, as a table a user picks from
    find_device                      a device index from an index or (part of) a name
    StreamResampler                  block-by-block polyphase resampling with carried state
    portaudio / device_rate / settle_device / check_stream_args
                                     plumbing the two ends share (not exported)

A device that cannot run at the link's rate runs at its default rate (or ``device_fs``) and the
audio is converted by :class:`StreamResampler`, whose output block by block is the output of
``scipy.signal.resample_poly`` on the whole signal: no clicks at block edges, no drift.

PortAudio reads the host's audio configuration (for ALSA, ``ALSA_CONFIG_PATH``) when it
initialises, once per process, on the first use of a device. It is imported lazily, so these
modules import without ``libportaudio2``; using a device without it raises
:class:`~devices.frames.DeviceError` saying what to install.

Numpy, scipy and sounddevice; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from devices.frames import DeviceError

__all__ = [
    "SoundDevice",
    "StreamResampler",
    "find_device",
    "format_devices",
    "list_devices",
]

log = logging.getLogger(__name__)

DeviceKind = Literal["input", "output"]
Latency = float | Literal["low", "high"]

POLL_S = 0.1  # how often a waiting reader checks that the stream is still alive


def portaudio() -> Any:
    """The ``sounddevice`` module, or :class:`DeviceError` saying what is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the package is there, libportaudio is not
        raise DeviceError(
            f"PortAudio is not available ({exc}); install the PortAudio library "
            "(Debian/Ubuntu: apt-get install libportaudio2) and the sounddevice package"
        ) from exc
    return sounddevice


# ---------------------------------------------------------------------------------------------
# Listing and picking devices


@dataclass(frozen=True, slots=True)
class SoundDevice:
    """One PortAudio device. ``hostapi`` is the host API's name (``"ALSA"``, ``"JACK"``...)."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default_input: bool
    is_default_output: bool

    def channels(self, kind: DeviceKind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels


def _default_index(sd: Any, kind: DeviceKind) -> int | None:
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except sd.PortAudioError:  # no default device of that kind
        return None


def list_devices() -> list[SoundDevice]:
    """Every device PortAudio sees, in index order. :class:`DeviceError` without PortAudio."""
    sd = portaudio()
    try:
        infos = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list sound devices: {exc}") from exc
    default_in, default_out = _default_index(sd, "input"), _default_index(sd, "output")
    return [
        SoundDevice(
            index=int(info["index"]),
            name=str(info["name"]),
            hostapi=str(hostapis[info["hostapi"]]["name"]),
            max_input_channels=int(info["max_input_channels"]),
            max_output_channels=int(info["max_output_channels"]),
            default_samplerate=float(info["default_samplerate"]),
            is_default_input=info["index"] == default_in,
            is_default_output=info["index"] == default_out,
        )
        for info in infos
    ]


def format_devices(devices: list[SoundDevice]) -> str:
    """A table to pick a device from: index, channels in/out (``*``: default), default rate."""
    if not devices:
        return (
            "no sound devices found (PortAudio sees none; is libportaudio2 installed, and is "
            "the sound system (ALSA, PulseAudio, PipeWire) configured with a card or a "
            "virtual device?)"
        )
    api_w = max(len("host API"), *(len(d.hostapi) for d in devices))
    lines = [f"{'index':>5}  {'in':>5}  {'out':>5}  {'rate Hz':>8}  {'host API':<{api_w}}  name"]
    for d in devices:
        ins = f"{d.max_input_channels}{'*' if d.is_default_input else ' '}"
        outs = f"{d.max_output_channels}{'*' if d.is_default_output else ' '}"
        lines.append(
            f"{d.index:>5}  {ins:>5}  {outs:>5}  {d.default_samplerate:>8.0f}  "
            f"{d.hostapi:<{api_w}}  {d.name}"
        )
    lines.append("* default input / output device")
    lines.append(
        "Pick a device by its index (e.g. 0) or by a case-insensitive part of its name "
        f"(e.g. {(devices[0].name.split() or ['name'])[0].lower()!r})."
    )
    return "\n".join(lines)


def _candidates(devices: list[SoundDevice], kind: DeviceKind) -> str:
    lines = [
        f"  {d.index}: {d.name} ({d.channels(kind)} {kind} channels)"
        for d in devices if d.channels(kind) > 0
    ]
    return "\n".join(lines) if lines else f"  (no {kind} devices)"


def find_device(spec: str | int | None, kind: DeviceKind) -> int | None:
    """The index of the ``kind`` device that ``spec`` names; ``None`` for the system default.

    ``spec``: an index (``3`` or ``"3"``) or a case-insensitive part of a device name; a name
    that several devices contain picks the one with exactly that name, or the only one of them
    with ``kind`` channels. Raises :class:`DeviceError`, listing the candidates, when nothing or
    several devices match, or when the device has no ``kind`` channels.
    """
    if kind not in ("input", "output"):
        raise ValueError(f"kind must be 'input' or 'output', got {kind!r}")
    if spec is None:
        return None
    devices = list_devices()
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        index = int(text)
        chosen = [d for d in devices if d.index == index]
        if not chosen:
            raise DeviceError(f"no sound device {index}; {kind} devices:\n"
                              f"{_candidates(devices, kind)}")
    else:
        if not text:
            raise DeviceError(f"empty sound device name; {kind} devices:\n"
                              f"{_candidates(devices, kind)}")
        named = [d for d in devices if text.lower() in d.name.lower()]
        chosen = [d for d in named if d.channels(kind) > 0]
        exact = [d for d in chosen if d.name.lower() == text.lower()]
        chosen = exact or chosen
        if len(chosen) > 1:
            raise DeviceError(
                f"{text!r} matches {len(chosen)} {kind} devices; use more of the name or the "
                f"index:\n{_candidates(chosen, kind)}"
            )
        if not named:
            raise DeviceError(f"no sound device matches {text!r}; {kind} devices:\n"
                              f"{_candidates(devices, kind)}")
        chosen = chosen or named
    device = chosen[0]
    if device.channels(kind) < 1:
        raise DeviceError(f"sound device {device.index} ({device.name}) has no {kind} channels; "
                          f"{kind} devices:\n{_candidates(devices, kind)}")
    return device.index


def device_rate(sd: Any, device: int | None, kind: DeviceKind, fs: int,
                 device_fs: int | None, dtype: str) -> tuple[int, str]:
    """The rate to open ``device`` at (``device_fs``, else ``fs`` if it can, else its default),
    and the device's name."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        info = sd.query_devices(device, kind=kind)
        name, default_fs = str(info["name"]), round(float(info["default_samplerate"]))
    except sd.PortAudioError as exc:
        raise DeviceError(f"no {kind} sound device ({exc})") from exc
    tried = [device_fs] if device_fs is not None else [fs, default_fs]
    errors = []
    for rate in dict.fromkeys(tried):  # fs == default_fs: try once
        try:
            check(device=device, channels=1, dtype=dtype, samplerate=rate)
        except sd.PortAudioError as exc:
            errors.append(f"{rate} Hz: {exc}")
            continue
        if rate != fs:
            log.info("sound device %r: %s at %d Hz, resampled to/from %d Hz", name, kind, rate, fs)
        return rate, name
    raise DeviceError(f"sound device {name!r} cannot do mono {dtype} {kind} at "
                      f"{' or '.join(errors)}")


@dataclass(frozen=True, kw_only=True)
class DeviceSetup:
    """A mono sound device found and its rate settled: what opening its stream needs.

    ``index``: PortAudio's device index (``None``: the default device); ``name``: the device's
    name; ``rate_hz``: the rate to open it at; ``blocksize``: device samples per block (the
    duration of ``block`` samples at ``fs``); ``resampler``: between ``fs`` and ``rate_hz`` in
    the stream's direction (device to ``fs`` for input, ``fs`` to device for output), ``None``
    when the two rates are the same.
    """

    index: int | None
    name: str
    rate_hz: int
    blocksize: int
    resampler: StreamResampler | None


def settle_device(device: str | int | None, kind: DeviceKind, *, fs: int, block: int,
                  device_fs: int | None, dtype: str) -> DeviceSetup:
    """Find ``device`` (:func:`find_device`) and the rate to run it at (:func:`device_rate`)
    for a stream of ``block``-sample blocks at ``fs``; raises :class:`DeviceError`."""
    index = find_device(device, kind)
    rate, name = device_rate(portaudio(), index, kind, fs, device_fs, dtype)
    resampler = None
    if rate != fs:
        resampler = StreamResampler(rate, fs) if kind == "input" else StreamResampler(fs, rate)
    return DeviceSetup(index=index, name=name, rate_hz=rate,
                       blocksize=max(1, round(block * rate / fs)), resampler=resampler)


# ---------------------------------------------------------------------------------------------
# Resampling


class StreamResampler:
    """``fs_in`` to ``fs_out`` Hz, one block at a time, carrying the filter state across blocks.

    The filter and the alignment are ``scipy.signal.resample_poly``'s (Kaiser-windowed FIR,
    ``beta`` 5, ``10 * max(up, down)`` taps each side), so ``process`` over consecutive blocks
    followed by ``flush`` returns exactly ``resample_poly`` of the whole signal (float32; the
    arithmetic is float64). Output sample ``k`` is the signal at input time ``k / fs_out``.

    An output sample needs input up to the filter's half length ahead, so ``process`` returns
    what is complete: it runs :attr:`delay_samples` (about ``10 / min(fs_in, fs_out)`` s)
    behind the input. :meth:`flush` ends the signal (zero padding, like ``resample_poly``) and
    resets; :meth:`reset` discards the state, for a signal that restarts after a gap. One
    thread at a time.
    """

    def __init__(self, fs_in: int, fs_out: int) -> None:
        if fs_in <= 0 or fs_out <= 0 or int(fs_in) != fs_in or int(fs_out) != fs_out:
            raise ValueError(f"rates must be positive integers (Hz), got {fs_in} -> {fs_out}")
        self.fs_in, self.fs_out = int(fs_in), int(fs_out)
        g = math.gcd(self.fs_in, self.fs_out)
        self.up, self.down = self.fs_out // g, self.fs_in // g
        self._h = np.zeros(1)
        self._skip = 0
        if (self.up, self.down) != (1, 1):
            from scipy.signal import firwin

            max_rate = max(self.up, self.down)
            half_len = 10 * max_rate
            h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
            pre_pad = self.down - half_len % self.down  # puts output samples on filter centres
            self._h = np.concatenate([np.zeros(pre_pad), h])
            self._skip = (half_len + pre_pad) // self.down  # outputs before input sample 0
        self.reset()

    @property
    def delay_samples(self) -> int:
        """How many output samples ``process`` holds back until more input arrives."""
        return self._skip

    def reset(self) -> None:
        self._x = np.zeros(0)  # input history, first sample is input number self._j0
        self._j0 = 0
        self._n_in = 0
        self._m_next = 0  # next filter-bank output to emit (output k is bank output k + skip)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resampled float32 samples of the next block ``x`` (1-D, any length)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D block, got shape {x.shape}")
        self._n_in += x.size
        if self.up == self.down:
            return x.astype(np.float32)
        self._x = np.concatenate([self._x, x])
        return self._emit(-(-self._n_in * self.up // self.down))

    def flush(self) -> np.ndarray:
        """The rest of the signal, as if it ended here; then :meth:`reset`."""
        if self.up == self.down:
            self.reset()
            return np.zeros(0, np.float32)
        m_stop = -(-self._n_in * self.up // self.down) + self._skip
        pad = max(0, -(-m_stop * self.down // self.up) - self._n_in)
        self._x = np.concatenate([self._x, np.zeros(pad)])
        out = self._emit(m_stop)
        self.reset()
        return out

    def _emit(self, m_end: int) -> np.ndarray:
        """Filter-bank outputs ``m_next .. m_end - 1`` (all complete), less the leading skip."""
        from scipy.signal import upfirdn

        first = max(self._m_next, self._skip)
        if m_end <= first:
            self._m_next = max(self._m_next, m_end)
            return np.zeros(0, np.float32)
        # The history starts at a multiple of `down`, so bank output m is local output m - q0.
        q0 = self._j0 * self.up // self.down
        out = upfirdn(self._h, self._x, self.up, self.down)[first - q0:m_end - q0]
        self._m_next = m_end
        # Keep the inputs the next output reaches back to, from a multiple of `down`.
        need = max(0, -(-(m_end * self.down - self._h.size + 1) // self.up))
        keep = need // self.down * self.down
        if keep > self._j0:
            self._x = self._x[keep - self._j0:]
            self._j0 = keep
        return out.astype(np.float32)


def check_stream_args(fs: int, block: int, queue_blocks: int, device_fs: int | None) -> None:
    if fs <= 0 or int(fs) != fs:
        raise ValueError(f"fs must be a positive integer (Hz), got {fs}")
    if block < 1:
        raise ValueError(f"block must be >= 1 sample, got {block}")
    if queue_blocks < 1:
        raise ValueError(f"queue_blocks must be >= 1, got {queue_blocks}")
    if device_fs is not None and (device_fs <= 0 or int(device_fs) != device_fs):
        raise ValueError(f"device_fs must be a positive integer (Hz) or None, got {device_fs}")

