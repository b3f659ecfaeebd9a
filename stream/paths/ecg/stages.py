"""The ECG authentication path: raw ECG chunks in (``kind="ecg"``), one result per heartbeat
out (``kind="result.ecg"``).

Two halves, each unit-testable on arrays without sockets:

- :class:`EcgStreamStage`, the per-stream stage (ingest or a shard process; it never imports
  torch). It keeps the stream's DSP state (:class:`engines.ecg.frontend.BeatFrontend`:
  band-pass with carried state, Pan-Tompkins R peaks, beat segmentation, signal quality) and
  the stream's clock. A chunk is *consumed* into that state; each heartbeat becomes a beat
  message for the engine workers, and each stretch of signal that cannot be trusted (flat,
  saturated, lead off, noisy, NaN) or a break in the stream (``seq`` gap, sample-rate change,
  sender restart) becomes a status result published straight away: a stream never goes quiet
  without saying why.
- :class:`EcgWorker`, the engine half (a worker process): embeds each beat
  (:data:`engines.ecg.specs.ECG_SPECS` ``"embedding"``), matches it against the templates
  enrolled in the :class:`~engines.ecg.templates.TemplateStore`, fuses the last ``k`` good
  beats of the stream, verifies a ``claim``, and on request explains the beat with Grad-CAM.

Timing: a beat's result carries ``r_t_ns`` (capture time of its R peak) and ``end_t_ns``
(capture time of the last sample the beat needs); its header ``t_ns`` is the capture time of
the last sample of the chunk that completed the beat, the moment the service could first have
had it, so the capture-to-result latency the service measures is its own decision latency
(the wearable's chunk buffering, ``t_ns - end_t_ns``, comes on top and is the sender's choice).

Beats of one stream always go to the same worker, in order (:attr:`EcgPath.sticky_streams`),
because the fused decision is per-stream state in the worker.

Header keys a sender may add to its chunks (all optional, see ``docs/protocol.md``):
``claim`` (str, the user this wearable claims to be), ``explain`` (bool, attach a Grad-CAM
heatmap to each beat's result), ``embed`` (bool, attach the beat's embedding, for live
enrolment), ``gain`` (counts per mV, for integer payloads). ``peer`` is the service's own:
ingest sets it to the sender's authenticated key (:mod:`stream.security`); a beat result carries
it, and a stream whose chunks come from another device restarts (``peer_changed``). So is
``watched`` (:data:`stream.wire.WATCHED_KEY`): a viewer draws the stream, and its beats are
explained as with ``explain``, within a budget per worker.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.ecg.frontend import (
    BEAT_FS_HZ,
    BEAT_SAMPLES,
    QUALITY_OK,
    BeatFrontend,
    FrontendOutput,
)
from stream.errors import InputError
from stream.security import PEER_KEY
from stream.wire import WATCHED_KEY, Message, data_message, result_message

if TYPE_CHECKING:
    from engines.ecg.matcher import FusionState, Matcher
    from engines.ecg.templates import TemplateStore
    from engines.spec import ModelSpec

__all__ = [
    "ECG_INPUT_KIND",
    "ECG_MAX_FS_HZ",
    "ECG_MIN_FS_HZ",
    "EcgPath",
    "EcgStreamStage",
    "EcgWorker",
    "pack_explanation",
    "unpack_explanation",
]

ECG_INPUT_KIND = "ecg"
ECG_MIN_FS_HZ = 100.0
ECG_MAX_FS_HZ = 2048.0
_MAX_CLAIM_CHARS = 128
_RESYNC_NS = 50_000_000  # re-anchor the stream clock when a chunk's t_ns is this far off it
_WATCHED_EXPLAIN_PER_S, _WATCHED_EXPLAIN_BURST = 4.0, 8  # Grad-CAMs for viewers, per worker
# Capture times accepted: |t_ns| <= 2**62 (years 1824-2116). The stream clock is re-anchored
# on t_ns and runs from it for the stream's life, and every time it gives (beats, status
# reports) must still be an int64.
_MAX_ABS_T_NS = 2**62
_TEMPLATE_CHECK_S = 0.25  # how often a worker looks for enrolments made by other processes


# ---------------------------------------------------------------------------------------------
# Per-stream stage


class EcgStreamStage:
    """Per-stream stage of the ECG path: chunks in, beat messages and status results out.

    ``max_samples``: the longest chunk accepted. Raises :class:`InputError` for a chunk it
    cannot use (``bad_dtype``, ``bad_shape``, ``empty``, ``too_long``, ``bad_fs``,
    ``bad_field``, ``stale_seq``); the stream's state is untouched by a rejected chunk.
    """

    def __init__(self, stream: str, *, max_samples: int = 1 << 16) -> None:
        self.stream = stream
        self.max_samples = max_samples
        self.frontend: BeatFrontend | None = None
        self.epoch = 0  # +1 at every reset: the worker restarts its fused decision
        self.beats = 0
        self._last_seq: int | None = None
        self._t0_ns = 0  # the stream clock: sample i was captured at t0 + i / fs
        self._status = QUALITY_OK
        self._chunk_end_ns = 0
        self._peer: str | None = None  # the authenticated sender of the stream's state

    # -- the stage protocol

    def process(self, msg: Message) -> Sequence[Message]:
        header = msg.header
        x = self._samples(msg)
        fs = float(header["fs"])
        seq, t_ns = int(header["seq"]), int(header["t_ns"])
        extras = self._extras(msg)
        event = self._continuity(msg, fs, seq, t_ns)
        if event is not None or self.frontend is None:
            self._reset(fs, t_ns)
        self._last_seq = seq
        self._peer = extras.get(PEER_KEY)
        frontend = self.frontend
        assert frontend is not None
        self._chunk_end_ns = self._time_ns(frontend.samples_seen + x.size - 1)
        outs = [] if event is None else [self._event(msg, *event)]
        outs.extend(self._outputs(msg, frontend.push(x), extras))
        return outs

    def _continuity(self, msg: Message, fs: float, seq: int, t_ns: int
                    ) -> tuple[str, str] | None:
        """Whether this chunk continues the stream: ``None``, or the event (status, detail)
        that breaks it (the stream restarts). Raises ``stale_seq`` for a duplicate or late
        chunk, which is not used."""
        frontend, last = self.frontend, self._last_seq
        if frontend is None or last is None:
            return None
        peer = msg.header.get(PEER_KEY)
        if peer != self._peer:
            # Another device on this stream id: its samples never join the state (and so the
            # beats) of the one before, so every beat comes from one authenticated device.
            return "peer_changed", "another device sends on this stream id; restarted"
        if fs != frontend.fs_hz:
            return "fs_changed", f"sample rate {frontend.fs_hz:g} -> {fs:g} Hz; restarted"
        expected_ns = self._time_ns(frontend.samples_seen)
        if seq <= last:
            if t_ns < expected_ns:
                raise InputError(
                    "stale_seq",
                    f"seq {seq} after {last} with an older capture time: a duplicate or "
                    "out-of-order chunk, not used",
                    stream=msg.stream, seq=seq,
                )
            return "restart", f"seq went back {last} -> {seq}: sender restarted"
        if seq > last + 1:
            lost_ms = max(0.0, (t_ns - expected_ns) / 1e6)
            return "gap", f"{seq - last - 1} chunk(s) lost (~{lost_ms:.0f} ms); restarted"
        if abs(t_ns - expected_ns) > _RESYNC_NS:
            # The sender's clock and its nominal fs disagree: follow the clock.
            self._t0_ns = t_ns - round(frontend.samples_seen * 1e9 / fs)
        return None

    def flush(self) -> Sequence[Message]:
        """End of stream: beats still waiting for samples are abandoned (they cannot complete)."""
        return ()

    # -- helpers

    def _samples(self, msg: Message) -> np.ndarray:
        x, header = msg.payload, msg.header

        def bad(code: str, reason: str) -> InputError:
            return InputError(code, reason, stream=msg.stream, seq=msg.seq)

        if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
            raise bad("bad_dtype", f"ECG samples must be integer or float, got {header['dtype']}")
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1:
            raise bad("bad_shape",
                      f"an ECG chunk is 1-D (samples,) of one lead, got shape {list(x.shape)}")
        if x.size == 0:
            raise bad("empty", "ECG chunk has 0 samples")
        if x.size > self.max_samples:
            raise bad("too_long", f"ECG chunk has {x.size} samples, limit {self.max_samples}")
        fs = float(header["fs"])
        if not ECG_MIN_FS_HZ <= fs <= ECG_MAX_FS_HZ:
            raise bad("bad_fs", f"fs {fs:g} Hz outside {ECG_MIN_FS_HZ:g}-{ECG_MAX_FS_HZ:g} Hz")
        if abs(header["t_ns"]) > _MAX_ABS_T_NS:
            raise bad("bad_field", f"t_ns {header['t_ns']} is outside +-2**62 (years 1824-2116)")
        if x.dtype.kind in "iu":
            gain = header.get("gain", 1.0)
            if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not (
                math.isfinite(gain) and gain > 0
            ):
                raise bad("bad_field", f"gain must be a positive number (counts/mV), got {gain!r}")
            return x.astype(np.float64) / float(gain)
        return x.astype(np.float64)

    def _extras(self, msg: Message) -> dict[str, Any]:
        header = msg.header
        extras: dict[str, Any] = {}
        claim = header.get("claim")
        if claim is not None:
            if not isinstance(claim, str) or not 0 < len(claim) <= _MAX_CLAIM_CHARS:
                raise InputError("bad_field", f"claim must be a user name (1-{_MAX_CLAIM_CHARS} "
                                 f"characters), got {claim!r}", stream=msg.stream, seq=msg.seq)
            extras["claim"] = claim
        for flag in ("explain", "embed"):
            value = header.get(flag)
            if value is not None and not isinstance(value, bool):
                raise InputError("bad_field", f"{flag} must be true or false, got {value!r}",
                                 stream=msg.stream, seq=msg.seq)
            if value:
                extras[flag] = True
        peer = header.get(PEER_KEY)  # set by ingest only: the authenticated sender
        if isinstance(peer, str):
            extras[PEER_KEY] = peer
        if header.get(WATCHED_KEY) is True:  # set by ingest only: a viewer draws this stream
            extras[WATCHED_KEY] = True
        return extras

    def _reset(self, fs: float, t_ns: int) -> None:
        """A fresh front end (its learning phase starts again); the clock starts at ``t_ns``."""
        self.frontend = BeatFrontend(fs)
        self.epoch += 1
        self._t0_ns = t_ns
        self._status = QUALITY_OK

    def _time_ns(self, index: float) -> int:
        assert self.frontend is not None
        return self._t0_ns + round(index * 1e9 / self.frontend.fs_hz)

    def _event(self, msg: Message, status: str, detail: str,
               start_ns: int | None = None, stop_ns: int | None = None) -> Message:
        """A status result (no engine needed): ``decision`` is ``uncertain`` unless the
        status is ``ok`` (the signal recovered)."""
        bad = status != QUALITY_OK
        body = {
            "type": "status",
            "status": status,
            "detail": detail,
            "t_start_ns": start_ns,
            "t_stop_ns": stop_ns,
            "r_t_ns": None,
            "identity": None,
            "score": None,
            "decision": "uncertain" if bad else None,
            "reason": status if bad else None,
        }
        return result_message("ecg", {**msg.header, "t_ns": self._chunk_end_ns}, body)

    def _outputs(self, msg: Message, out: FrontendOutput, extras: dict[str, Any]
                 ) -> list[Message]:
        assert self.frontend is not None
        fs = self.frontend.fs_hz
        msgs: list[Message] = []
        for block in out.blocks:
            if block.status == QUALITY_OK and self._status == QUALITY_OK:
                continue  # good signal is reported by its beats
            self._status = block.status
            msgs.append(self._event(
                msg, block.status, block.detail or ("signal usable again"
                                                    if block.status == QUALITY_OK else ""),
                self._time_ns(block.start_index), self._time_ns(block.stop_index - 1),
            ))
        for beat in out.beats:
            self.beats += 1
            r_t_ns = self._t0_ns + round((beat.r_index / fs + beat.r_offset_s) * 1e9)
            msgs.append(data_message(
                ECG_INPUT_KIND, msg.stream, int(msg.header["seq"]), beat.samples,
                t_ns=self._chunk_end_ns, fs=BEAT_FS_HZ, end_t_ns=self._time_ns(beat.end_index),
                r_t_ns=r_t_ns, beat=self.beats, epoch=self.epoch, quality=beat.quality,
                inverted=bool(beat.inverted),
                rr_s=None if beat.rr_s is None else round(float(beat.rr_s), 4),
                **extras,
            ))
        return msgs


# ---------------------------------------------------------------------------------------------
# Engine worker


class EcgWorker:
    """Engine half of the ECG path (engine-worker process).

    ``engine``: any callable ``(B, 1, 192) float32 -> (B, 64) float32`` (unit-norm beat
    embeddings); ``matcher``: the calibrated decision rule; ``store``: the enrolled templates
    (re-read when another process enrols or removes a user); ``spec``: the embedding model's
    spec, whose eager model is loaded on the first beat that asks for a Grad-CAM explanation.
    A beat is explained when its wearable asks (``explain``), or when a viewer watches its
    stream (``watched``, at most :data:`_WATCHED_EXPLAIN_PER_S` a second per worker: viewers
    cannot make the workers explain every beat of every wearable).
    Keeps a :class:`~engines.ecg.matcher.FusionState` per stream (at most ``max_streams``,
    least recently seen evicted).
    """

    def __init__(
        self,
        engine: Any,
        *,
        matcher: Matcher,
        store: TemplateStore,
        model_id: str,
        spec: ModelSpec | None = None,
        max_streams: int = 4096,
    ) -> None:
        self.engine = engine
        self.matcher = matcher
        self.store = store
        self.model_id = model_id
        self.spec = spec
        self.max_streams = max_streams
        self._templates: tuple[list[str], np.ndarray] = ([], np.zeros((0, 0), np.float32))
        self._next_check = 0.0
        self._fusion: OrderedDict[str, tuple[int, FusionState]] = OrderedDict()
        self._eager: Any = None
        self._watched = _Budget(per_s=_WATCHED_EXPLAIN_PER_S, burst=_WATCHED_EXPLAIN_BURST)
        self.reload_templates()

    def reload_templates(self) -> None:
        self._templates = self.store.templates(self.model_id)
        self._next_check = time.monotonic() + _TEMPLATE_CHECK_S

    def prepare(self, msg: Message) -> tuple[np.ndarray, Any]:
        beat = msg.payload
        if not isinstance(beat, np.ndarray) or beat.shape != (BEAT_SAMPLES,):
            raise InputError("input_contract", f"a beat is ({BEAT_SAMPLES},) samples",
                             stream=msg.stream, seq=msg.seq)
        return beat.astype(np.float32).reshape(1, 1, BEAT_SAMPLES), None

    def run(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.engine(rows))

    def finish(self, msg: Message, outputs: np.ndarray, plan: Any) -> dict[str, Any]:
        """The beat's result body (see ``docs/protocol.md``)."""
        header = msg.header
        now = time.monotonic()
        if now >= self._next_check:
            if self.store.changed():
                self.reload_templates()
            else:
                self._next_check = now + _TEMPLATE_CHECK_S
        embedding = np.asarray(outputs[0], dtype=np.float32)
        quality = header.get("quality", QUALITY_OK)
        claim = header.get("claim")
        rr_s = header.get("rr_s")
        body: dict[str, Any] = {
            "type": "beat",
            "r_t_ns": header.get("r_t_ns"),
            "end_t_ns": header.get("end_t_ns"),
            "beat": header.get("beat"),
            "hr_bpm": round(60.0 / rr_s, 1) if rr_s else None,
            "quality": quality,
            "inverted": bool(header.get("inverted", False)),
            "peer": header.get(PEER_KEY),  # the sender's authenticated key, or None
        }
        fusion = self._fusion_state(msg.stream, int(header.get("epoch", 0)))
        if quality == QUALITY_OK and np.isfinite(embedding).all():
            fusion.add(embedding)
            body.update(self._decide(embedding, claim))
        else:
            reason = quality if quality != QUALITY_OK else "engine_output"
            body.update(identity=None, score=None, decision="uncertain", reason=reason)
            if claim is not None:
                body.update(claim=claim, verified=None)
        fused = fusion.fused()
        body["fused"] = None if fused is None else {"beats": len(fusion),
                                                    **self._decide(fused, claim)}
        if header.get("embed"):
            body["embedding"] = embedding.astype("<f4").tobytes()
            body["model"] = self.model_id
        if header.get("explain") or (header.get(WATCHED_KEY) and self._watched.take(now)):
            # A claim is explained only once verified: else a heatmap for a known user and
            # none for an unknown one would tell them apart.
            target = claim if body.get("verified") else body.get("identity")
            body["gradcam"] = self._explain(np.asarray(msg.payload, np.float32), target)
        return body

    def _decide(self, probe: np.ndarray, claim: str | None) -> dict[str, Any]:
        names, _ = self._templates
        if not names:
            out: dict[str, Any] = {"identity": None, "score": None, "decision": "uncertain",
                                   "reason": "no_users"}
        else:
            match = self.matcher.score(probe, self._templates)
            out = {
                "identity": match.user if match.decision == "accept" else None,
                "score": round(match.score, 4),
                "decision": match.decision,
                "reason": {"accept": None, "reject": "below_reject_threshold",
                           "uncertain": "between_thresholds"}[match.decision],
            }
        if claim is not None:
            # No claim score: an unknown user is answered exactly like a failed claim, so
            # claims cannot enumerate the enrolled users.
            verdict = self.matcher.verify(probe, claim, self._templates)
            out.update(claim=claim, verified=verdict.decision == "accept")
        return out

    def _explain(self, beat: np.ndarray, target: str | None) -> dict[str, Any] | None:
        """Grad-CAM of the beat against ``target``'s template (``None``: nobody to explain
        against). The eager model is loaded on first use."""
        from engines.ecg.gradcam import gradcam

        names, matrix = self._templates
        if target is None or target not in names or self.spec is None:
            return None
        if self._eager is None:
            self._eager = self.spec.load()
        cam = gradcam(self._eager, beat, matrix[names.index(target)])
        return pack_explanation(cam.spectrogram, cam.heatmap, target=target, score=cam.score)

    def _fusion_state(self, stream: str, epoch: int) -> FusionState:
        entry = self._fusion.get(stream)
        if entry is None or entry[0] != epoch:
            if entry is None and len(self._fusion) >= self.max_streams:
                self._fusion.popitem(last=False)
            entry = self._fusion[stream] = (epoch, self.matcher.new_state())
        self._fusion.move_to_end(stream)
        return entry[1]

    def warm_up(self, max_batch: int) -> None:
        for batch in sorted({1, max_batch}):
            self.run(np.zeros((batch, 1, BEAT_SAMPLES), dtype=np.float32))

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
        self.store.close()


class _Budget:
    """A token bucket: :meth:`take` allows ``per_s`` a second on average, ``burst`` at once."""

    def __init__(self, *, per_s: float, burst: int) -> None:
        self.per_s, self.burst = per_s, burst
        self._tokens, self._at = float(burst), time.monotonic()

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def pack_explanation(spectrogram: np.ndarray, heatmap: np.ndarray, **extra: Any
                     ) -> dict[str, Any]:
    """A Grad-CAM explanation as it travels in a result: both ``(F, T)`` maps as uint8 bytes
    (the spectrogram min-max scaled, the heatmap 0..1 -> 0..255) with their ``shape``."""
    s = np.asarray(spectrogram, dtype=np.float64)
    span = float(s.max() - s.min())
    grey = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, 1.0)
    return {
        "shape": list(s.shape),
        "spectrogram": np.round(grey * 255).astype(np.uint8).tobytes(),
        "heatmap": np.round(heat * 255).astype(np.uint8).tobytes(),
        **extra,
    }


def unpack_explanation(packed: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The ``(F, T)`` spectrogram and heatmap of :func:`pack_explanation`, as floats 0..1."""
    shape = tuple(int(n) for n in packed["shape"])
    grey = np.frombuffer(packed["spectrogram"], np.uint8).reshape(shape) / 255.0
    heat = np.frombuffer(packed["heatmap"], np.uint8).reshape(shape) / 255.0
    return grey.astype(np.float32), heat.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The path


@dataclass(frozen=True, kw_only=True)
class EcgPath:
    """The ECG path, as the runtime needs it.

    ``templates``: the SQLite template store (created if missing); ``templates_key``: the key
    file its templates are encrypted with (:mod:`engines.ecg.templates`). ``fuse_beats``: beats
    in the fused decision. ``weights``: embedding weights to use instead of the shipped ones.
    ``max_samples``: the longest chunk accepted.
    """

    templates: FsPath
    templates_key: FsPath | None = None
    fuse_beats: int = 5
    weights: FsPath | None = None
    max_samples: int = 1 << 16
    model: str = "embedding"

    name: str = dataclasses.field(default="ecg", init=False)
    input_kind: str = dataclasses.field(default=ECG_INPUT_KIND, init=False)
    time_series: bool = dataclasses.field(default=True, init=False)
    sticky_streams: bool = dataclasses.field(default=True, init=False)
    # ECG chunks feed a stream's filters and R-peak detector: shed only when far behind (a
    # shed chunk restarts its stream, as a seq gap does).
    deadline_ms: int = dataclasses.field(default=1000, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.fuse_beats, int) or self.fuse_beats < 1:
            raise ValueError(f"fuse_beats must be a positive integer, got {self.fuse_beats!r}")
        if not isinstance(self.max_samples, int) or self.max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer, got {self.max_samples!r}")
        if self.model != "embedding":
            raise ValueError("the ECG gateway serves the 'embedding' model (open-set "
                             "identification with enrolment); 'cnn' is the paper's closed-set "
                             "reference, evaluated by `sigstream eval ecg`")

    @property
    def result_kind(self) -> str:
        return f"result.{self.name}"

    def stream_stage(self, stream: str) -> EcgStreamStage:
        return EcgStreamStage(stream, max_samples=self.max_samples)

    def load_worker(
        self, *, backend: str, max_batch: int, cache_dir: FsPath | None, threads: int | None
    ) -> EcgWorker:
        """Load the embedding engine, the template store and the decision rules."""
        from engines.ecg.matcher import Matcher
        from engines.ecg.specs import ECG_SPECS
        from engines.ecg.templates import TemplateStore
        from engines.engine import load_engine

        spec = ECG_SPECS[self.model]
        if self.weights is not None:
            spec = dataclasses.replace(spec, weights=str(FsPath(self.weights).resolve()))
        engine = load_engine(spec, backend, max_batch=max_batch, cache_dir=cache_dir,
                             threads=threads)
        model_id = spec.weights_sha256()
        store = TemplateStore(self.templates, key_file=self.templates_key)
        store.open()
        worker = EcgWorker(
            engine,
            matcher=Matcher.from_card(spec.card(), fuse_beats=self.fuse_beats),
            store=store,
            model_id=model_id,
            spec=spec,
        )
        worker.warm_up(max_batch)
        return worker

