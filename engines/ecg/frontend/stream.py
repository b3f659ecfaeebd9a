"""The streaming front end itself (:class:`BeatFrontend`: ring buffers, the Pan-Tompkins
detector, R peaks, beats and quality blocks) and its whole-record forms."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from engines.ecg.frontend.config import Beat, FrontendConfig, FrontendOutput, QualityBlock
from engines.ecg.frontend.filters import (
    catmull_rom,
    check_fs,
    design_filters,
    median_lower,
    run_fir,
    run_sos,
)
from engines.ecg.frontend.quality import CURVATURE_FS_HZ, QRS_HALF_S, assess

__all__ = ["BeatFrontend", "detect_r_peaks", "extract_beats"]


class BeatFrontend:
    """Stateful per-stream front end: ``push`` samples in, beats and quality blocks out.

    ``fs_hz``: the stream's sample rate, 100..2048 Hz (ValueError otherwise; the design range
    is 128..1000 Hz). :attr:`samples_seen` counts the samples pushed. Not thread-safe: one
    thread (the stream's shard) calls it. After :meth:`flush` the stream is over and
    :meth:`push` raises ``RuntimeError``.

    Memory: the filters are designed once per rate and shared; a stream owns its filter
    states and a ring of ``history_s`` of three signals (input, morphology band, integrated),
    allocated as samples arrive: :attr:`state_bytes` is at most ``history_s * fs * 20`` bytes
    (input samples that float32 holds exactly are kept as float32; a fourth byte per sample
    once a non-finite sample came), e.g. 60 KB at 250 Hz, plus a few KB of Python objects.
    """

    def __init__(self, fs_hz: float, config: FrontendConfig | None = None) -> None:
        cfg = FrontendConfig() if config is None else config
        fs = check_fs(fs_hz)
        self.fs_hz = fs
        self.config = cfg
        self.samples_seen = 0
        self._flushed = False

        design = design_filters(fs, cfg)
        self._sos_m = design.sos_m
        self._sos_q = design.sos_q
        self._zi_m_unit = design.zi_m_unit
        self._zi_q_unit = design.zi_q_unit
        self._zi_m = design.zi_m_unit  # replaced (scaled copies) by the first push
        self._zi_q = design.zi_q_unit
        self._b_mwi = design.b_mwi
        self._n_mwi = n_mwi = design.b_mwi.size
        self._zi_mwi = np.zeros(n_mwi - 1)
        self._d_tail = np.zeros(n_mwi)  # |derivative| of the last n_mwi samples (slopes)
        self._delay_m = design.delay_m
        self._min_peak = design.min_peak
        self._last_valid = 0.0

        # ring buffers, sample i at i % cap: one piece never wraps, a window that does is
        # copied out. They grow (doubling) until they hold ``keep`` samples, so a short-lived
        # stream costs what it sent; ``keep`` bounds every look back (clamps below).
        self._keep = design.keep
        self._max_piece = design.max_piece
        self._cap = 0
        # input with non-finite samples held (float32 until a sample needs float64: the
        # quality tests compare exact values), morphology band, integrated signal, and
        # (from the first non-finite input sample on) which samples were non-finite
        self._x: np.ndarray = np.zeros(0, np.float32)
        self._y: np.ndarray = np.zeros(0)
        self._m: np.ndarray = np.zeros(0)
        self._nonfinite: np.ndarray | None = None

        # detector, in samples
        self._w = max(1, round(cfg.peak_window_s * fs))
        self._learn_n = round(cfg.learn_s * fs)
        self._refr_n = round(cfg.refractory_s * fs)
        self._twave_n = round(cfg.twave_s * fs)
        self._relearn_n = round(cfg.relearn_s * fs)
        self._r_lo = round(cfg.r_window_s[0] * fs)
        self._r_hi = round(cfg.r_window_s[1] * fs)
        self._qrs_half = max(1, round(QRS_HALF_S * fs))
        self._scan_next = 1  # first integrated-signal index not yet examined for a local max
        # recent local maxima and confirmed candidates waiting for classification:
        # (index, integrated-signal value, steepest slope in the mwi window before it)
        self._lmax: deque[tuple[int, float, float]] = deque()
        self._lmax_next = 0  # position in _lmax of the first one not yet confirmed
        self._cands: deque[tuple[int, float, float]] = deque()
        self._learned = False
        self._learn_start = 0
        self._spki = 0.0
        self._npki = 0.0
        self._clock = 0  # samples_seen at which the decision being made became possible
        self._last_qrs: int | None = None  # integrated-signal index of the last QRS
        self._last_slope = 0.0
        self._noise_cands: list[tuple[int, float, float]] = []  # (index, peak, slope) since QRS
        self._rr: deque[float] = deque(maxlen=8)  # regular RR intervals, samples
        self._rr_all: deque[float] = deque(maxlen=8)  # all RR intervals, samples
        self._irregular = 0  # consecutive RR intervals outside 92..116 % of the average
        self._sb_done = False  # search-back of the current interval ran and found nothing
        self._relearn_ref = 0  # the next relearning is due relearn_n after this index
        self._votes: deque[float] = deque(maxlen=cfg.polarity_beats)
        self._inverted = False
        self._prev_r: float | None = None  # last R time, input samples (fractional)
        self._prev_t_y: float | None = None  # the same in the morphology band's samples
        self._pending: deque[tuple[float, int, float, int, bool, float | None]] = deque()
        # (r_index, decided_at, QRS peak-to-peak mV) of recent detections, for quality
        self._detections: deque[tuple[int, int, float]] = deque()
        self._r_log: list[int] | None = None  # every R index, for detect_r_peaks

        # quality
        self._block_n = max(1, round(cfg.block_s * fs))
        self._block_lag_n = round(cfg.block_lag_s * fs)
        self._next_block = 0
        self._clip_n = max(cfg.clip_min_samples, round(cfg.clip_min_s * fs))
        self._curv_step = max(1, round(fs / CURVATURE_FS_HZ))
        self._curv_scale = (fs / self._curv_step) ** 2
        self._beat_offsets = design.beat_offsets

    # -- public ------------------------------------------------------------------------------

    def push(self, x: np.ndarray) -> FrontendOutput:
        """Feed the next samples (mV, any shape that ravels to 1-D, any float/int dtype).

        Returns the beats whose last sample arrived (and whose R was decided) and the quality
        blocks assessed during this call; an empty chunk is a no-op.
        """
        if self._flushed:
            raise RuntimeError("this BeatFrontend was flushed; start a new one for a new stream")
        data = np.asarray(x, dtype=np.float64).ravel()
        out = FrontendOutput()
        if data.size == 0:
            return out
        start = 0
        while start < data.size:
            want = min(data.size - start, self._max_piece)
            if self._cap < self._keep:
                self._reserve(self.samples_seen + want)
            # pieces end at the ring buffer's end, so none wraps around it
            room = self._cap - self.samples_seen % self._cap
            take = min(want, room)
            self._push_piece(data[start : start + take], out)
            start += take
        return out

    def flush(self) -> FrontendOutput:
        """End of stream: decide the last candidates (with the samples there are) and assess
        the last, possibly partial, block. Beats that would need samples past the end are
        dropped. Afterwards :meth:`push` raises ``RuntimeError``; a second flush is empty."""
        out = FrontendOutput()
        if self._flushed:
            return out
        self._flushed = True
        n = self.samples_seen
        if n == 0:
            return out
        self._find_candidates(n)
        self._classify(horizon=n, final=True)
        self._emit_beats(out)
        while self._next_block < n:
            start = self._next_block
            stop = min(start + self._block_n, n)
            status, detail = self._assess(start, stop, self._block_amps(start, stop, None))
            out.blocks.append(QualityBlock(start, stop, status, detail))
            self._next_block = stop
        return out

    # -- per piece -----------------------------------------------------------------------------

    def _push_piece(self, x: np.ndarray, out: FrontendOutput) -> None:
        """Process samples that fit in the ring buffer without wrapping around its end."""
        n = x.size
        n0 = self.samples_seen
        p = n0 % self._cap
        if math.isfinite(np.add.reduce(x)):  # (a cheap "all finite"; an overflow takes the
            xs = x  # careful path below, which handles finite samples exactly too)
            if self._nonfinite is not None:
                self._nonfinite[p : p + n] = False
        else:
            # hold the last finite value through NaN/Inf so the filters never see them
            finite = np.isfinite(x)
            idx = np.where(finite, np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            xs = np.where(idx >= 0, x[np.maximum(idx, 0)], self._last_valid)
            if self._nonfinite is None:
                self._nonfinite = np.zeros(self._cap, bool)
            self._nonfinite[p : p + n] = ~finite
        if self._x.dtype == np.float32:
            with np.errstate(over="ignore"):
                exact = np.array_equal(xs.astype(np.float32), xs)
            if not exact:
                self._x = self._x.astype(np.float64)  # keep the input exactly
        self._x[p : p + n] = xs
        if n0 == 0:
            self._zi_m = self._zi_m_unit * xs[0]
            self._zi_q = self._zi_q_unit * xs[0]
        self._last_valid = float(xs[-1])
        y = self._y[p : p + n]
        y[:] = xs
        run_sos(self._sos_m, y[None], self._zi_m)
        d = xs.copy()[None]
        run_sos(self._sos_q, d, self._zi_q)
        d = d[0]
        self._m[p : p + n], self._zi_mwi = run_fir(self._b_mwi, d * d, self._zi_mwi)
        self.samples_seen = n0 + n
        self._find_candidates(self.samples_seen - self._w, d)
        self._classify(horizon=self.samples_seen - self._w, final=False)
        self._emit_beats(out)
        self._assess_blocks(out)

    def _reserve(self, need: int) -> None:
        """Grow the (not yet wrapped) ring buffers to hold ``need`` samples, at most ``keep``:
        doubling, so the copies cost O(1) per sample."""
        if need <= self._cap:
            return
        cap = min(self._keep, max(2 * self._cap, need, 256))
        n = self.samples_seen  # <= self._cap: nothing has wrapped yet
        arrays: list[np.ndarray] = [self._x, self._y, self._m]
        if self._nonfinite is not None:
            arrays.append(self._nonfinite)
        grown = []
        for old in arrays:
            new = np.zeros(cap, old.dtype)
            new[:n] = old[:n]
            grown.append(new)
        self._x, self._y, self._m = grown[:3]
        if self._nonfinite is not None:
            self._nonfinite = grown[3]
        self._cap = cap

    def _oldest(self) -> int:
        """The oldest sample index every ring still holds (the clamp of every look back)."""
        return max(0, self.samples_seen - self._keep + 1)

    def _view(self, ring: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (absolute indices) of a ring buffer: a view, or a copy
        where the window wraps around the ring's end."""
        if stop - start > self._cap or start < self.samples_seen - self._cap:
            raise RuntimeError("internal: window outside the ring buffer")  # pragma: no cover
        p = start % self._cap
        q = p + stop - start
        if q <= self._cap:
            return ring[p:q]
        return np.concatenate((ring[p:], ring[: q - self._cap]))

    @property
    def state_bytes(self) -> int:
        """Bytes of numpy buffers this stream owns (ring buffers and filter states); the
        shared filter designs are not counted."""
        arrays: list[np.ndarray | None] = [self._x, self._y, self._m, self._zi_m, self._zi_q,
                                           self._zi_mwi, self._d_tail, self._nonfinite]
        return sum(a.nbytes for a in arrays if a is not None)

    # -- detection -----------------------------------------------------------------------------

    def _find_candidates(self, limit: int, d: np.ndarray | None = None) -> None:
        """Confirm the candidates with index < ``limit``: their following ``peak_window_s``
        has arrived (``limit <= samples_seen - w``) or the stream ended (flush). ``d``: the
        derivative of the samples just pushed (``None`` at flush, when none were).

        The integrated signal rises and falls between its local maxima, so its maximum over
        any window is at the window's ends or at a local maximum inside: the dominance test
        needs the local maxima (kept in ``_lmax``) and two samples, not the whole window."""
        n = self.samples_seen
        w = self._w
        # local maxima (rising into the sample, not rising out of it) of every sample that has
        # both neighbours; those below min_peak can neither be candidates nor beat one
        lo = self._scan_next
        if n - 1 > lo:
            assert d is not None
            ext = self._view(self._m, lo - 1, n)
            mid = ext[1:-1]
            peaks = np.flatnonzero((mid > ext[:-2]) & (mid >= ext[2:]) & (mid >= self._min_peak))
            # each maximum's steepest slope (max |d| over the mwi window ending at it), taken
            # now so that no derivative history is kept; the tail holds the n_mwi samples
            # before this piece (zeros before the stream, which cannot raise a max of |d|)
            d_ext = np.abs(np.concatenate((self._d_tail, d)))
            self._d_tail = d_ext[-self._n_mwi :].copy()
            if peaks.size:
                ends = (peaks + lo + 1 - (n - d_ext.size)).tolist()  # positions in d_ext
                slopes = [float(d_ext[j - self._n_mwi : j].max()) for j in ends]
                self._lmax.extend(zip((peaks + lo).tolist(), mid[peaks].tolist(), slopes,
                                      strict=True))
            self._scan_next = n - 1
        elif d is not None:
            self._d_tail = np.abs(np.concatenate((self._d_tail, d)))[-self._n_mwi :].copy()
        lmax = self._lmax
        ring = self._m
        cap = self._cap
        k = self._lmax_next  # lmax[k] is the first local maximum not yet confirmed
        while k < len(lmax) and lmax[k][0] < limit:
            i, v, _ = lmax[k]
            left = ring[max(i - w, 0) % cap]
            j = k - 1
            while j >= 0 and lmax[j][0] > i - w and left < v:
                left = max(left, lmax[j][1])
                j -= 1
            if left < v:
                right = ring[min(i + w, n - 1) % cap]
                j = k + 1
                while j < len(lmax) and lmax[j][0] < i + w and right <= v:
                    right = max(right, lmax[j][1])
                    j += 1
                if right <= v:
                    self._cands.append(lmax[k])
            k += 1
        # keep the maxima that can still dominate a later one
        while k > 0 and lmax[0][0] < limit - w:
            lmax.popleft()
            k -= 1
        self._lmax_next = k

    def _thresholds(self) -> tuple[float, float]:
        thr1 = self._npki + 0.25 * (self._spki - self._npki)
        return thr1, 0.5 * thr1

    def _rr_limit(self) -> float:
        rr = sum(self._rr) / len(self._rr) if self._rr else self.config.rr_initial_s * self.fs_hz
        return self.config.searchback_rr * rr

    def _learn(self, start: int, stop: int) -> None:
        m = self._view(self._m, max(start, self._oldest()), stop)
        self._spki = float(m.max()) / 3.0
        self._npki = float(m.mean()) / 2.0
        self._learned = True

    def _classify(self, *, horizon: int, final: bool) -> None:
        """Classify the confirmed candidates in time order; ``horizon``: every candidate with
        index < horizon is known."""
        w = self._w
        while not self._learned:
            learn_end = self._learn_start + self._learn_n
            if horizon < learn_end and not final:
                return
            if not self._cands or self._cands[0][0] >= learn_end:
                if final and not self._cands:
                    return
                # nothing QRS-like yet (a lead still off, a flat line): levels learnt here
                # would be those of noise, so the learning phase starts again
                self._learn_start = learn_end
                continue
            self._learn(self._learn_start, min(learn_end, self.samples_seen))
            self._clock = max(self._clock, learn_end + w + 1)
            self._relearn_ref = learn_end
        cands = self._cands
        while True:
            nxt = cands[0][0] if cands else None
            # the time-ordered events: search-back, relearning, then the next candidate
            if self._last_qrs is not None and not self._sb_done:
                # (before the relearning is due, which bounds how far back the ring must reach)
                t_sb = self._last_qrs + min(int(self._rr_limit()), self._relearn_n)
                if t_sb < (nxt if nxt is not None else horizon):
                    self._clock = max(self._clock, t_sb + w + 1)
                    self._search_back(t_sb)
                    continue
            t_rl = self._relearn_ref + self._relearn_n
            if t_rl < (nxt if nxt is not None else horizon):
                self._clock = max(self._clock, t_rl + w + 1)
                self._relearn(t_rl)
                continue
            if nxt is None:
                return
            cand = cands.popleft()
            self._clock = max(self._clock, nxt + w + 1)
            self._candidate(*cand)

    def _candidate(self, i: int, v: float, slope: float) -> None:
        last = self._last_qrs
        if last is not None and i - last < self._refr_n:
            return
        thr1, _ = self._thresholds()
        if v > thr1:
            if (
                last is not None
                and i - last < self._twave_n
                and slope < self.config.twave_slope_ratio * self._last_slope
            ):
                self._noise(i, v, slope)
                return
            # an artefact far above the QRS level moves SPKI by at most spki_step_max x itself,
            # so the beats after it still cross THRESHOLD II
            v_level = min(v, self.config.spki_step_max * self._spki) if self._spki > 0 else v
            self._spki = 0.125 * v_level + 0.875 * self._spki
            self._qrs(i, slope)
        else:
            self._noise(i, v, slope)

    def _noise(self, i: int, v: float, slope: float) -> None:
        self._npki = 0.125 * v + 0.875 * self._npki
        self._noise_cands.append((i, v, slope))

    def _search_back(self, t_sb: int) -> None:
        _, thr2 = self._thresholds()
        last = self._last_qrs
        assert last is not None
        best: tuple[int, float, float] | None = None
        for i, v, slope in self._noise_cands:
            if i > t_sb or v <= thr2:
                continue
            if (
                i - last < self._twave_n
                and slope < self.config.twave_slope_ratio * self._last_slope
            ):
                continue
            if best is None or v > best[1]:
                best = (i, v, slope)
        if best is None:
            self._sb_done = True
            return
        i, v, slope = best
        self._spki = 0.25 * v + 0.75 * self._spki
        later = [c for c in self._noise_cands if c[0] >= i + self._refr_n]
        self._qrs(i, slope)
        self._noise_cands = later

    def _relearn(self, t: int) -> None:
        start = t - self._learn_n
        self._learn(start, t)
        self._relearn_ref = t
        again = [c for c in self._noise_cands if start <= c[0] <= t]
        self._noise_cands = [c for c in self._noise_cands if c[0] < start]
        self._cands.extendleft(reversed(again))

    def _qrs(self, i: int, slope: float) -> None:
        last = self._last_qrs
        if last is not None:
            rr = float(i - last)
            self._rr_all.append(rr)
            if self._rr:
                avg = sum(self._rr) / len(self._rr)
                regular = 0.92 * avg <= rr <= 1.16 * avg
            else:
                regular = True
            if regular:
                self._rr.append(rr)
                self._irregular = 0
            else:
                self._irregular += 1
                if self._irregular >= self._rr_all.maxlen:  # type: ignore[operator]
                    # a lasting change of rhythm: follow it rather than keep the old average
                    self._rr = deque(self._rr_all, maxlen=self._rr_all.maxlen)
                    self._irregular = 0
        self._last_qrs = i
        self._last_slope = slope
        self._noise_cands = []
        self._sb_done = False
        self._relearn_ref = i
        self._locate_r(i)

    # -- R peak and beats ----------------------------------------------------------------------

    def _locate_r(self, i: int) -> None:
        lo = max(i + self._r_lo, self._oldest())
        if self._prev_t_y is not None:  # R peaks at least a refractory period apart
            lo = max(lo, math.floor(self._prev_t_y) + self._refr_n)
        hi = i + self._r_hi + 1
        if hi - lo < 3:
            return  # the window is taken by the previous beat: the same complex
        seg = self._view(self._y, lo, hi)
        base = median_lower(seg)
        top = float(seg.max()) - base
        bottom = base - float(seg.min())
        vote = (top - bottom) / (top + bottom) if top + bottom > 0 else 0.0
        self._votes.append(vote)
        mean_vote = sum(self._votes) / len(self._votes)
        h = self.config.polarity_hysteresis
        if self._inverted and mean_vote > h:
            self._inverted = False
        elif not self._inverted and mean_vote < -h:
            self._inverted = True
        sign = -1.0 if self._inverted else 1.0
        k = int(np.argmax(seg)) if sign > 0 else int(np.argmin(seg))
        frac = 0.0
        if 0 < k < seg.size - 1:
            a, b, c = (sign * float(v) for v in seg[k - 1 : k + 2])
            denom = a - 2.0 * b + c
            if denom < 0:
                frac = min(max(0.5 * (a - c) / denom, -0.5), 0.5)
        t_y = lo + k + frac  # R in the morphology-band signal's samples
        t_in = t_y - self._delay_m  # R in the input's time base
        r_index = math.floor(t_in + 0.5)
        rr_s = None if self._prev_r is None else (t_in - self._prev_r) / self.fs_hz
        self._prev_r = t_in
        self._prev_t_y = t_y
        # QRS amplitude: peak-to-peak within QRS_HALF_S of R (what has arrived of it)
        h = self._qrs_half
        qrs = seg[max(k - h, 0) : k + h + 1]
        self._detections.append((r_index, self._clock, float(qrs.max() - qrs.min())))
        if self._r_log is not None:
            self._r_log.append(r_index)
        pos_first = t_y + self._beat_offsets[0]
        if math.floor(pos_first) - 1 < 0:
            return  # the beat would start before the stream
        end_index = int(np.floor(t_y + self._beat_offsets)[-1]) + 2  # as _emit_beats computes
        self._pending.append(
            (t_y, r_index, (t_in - r_index) / self.fs_hz, end_index, self._inverted, rr_s)
        )

    def _emit_beats(self, out: FrontendOutput) -> None:
        n = self.samples_seen
        while self._pending and self._pending[0][3] < n:
            t_y, r_index, r_off, end_index, inverted, rr_s = self._pending.popleft()
            pos = t_y + self._beat_offsets
            k = np.floor(pos)
            start = int(k[0]) - 1
            y = self._view(self._y, start, end_index + 1)
            samples = catmull_rom(y, k.astype(np.intp) - start, pos - k)
            if inverted:
                samples = -samples
            w_start = end_index + 1 - self._block_n
            amps = [a for r, _, a in self._detections if w_start <= r <= r_index]
            status, _ = self._assess(w_start, end_index + 1, amps)
            out.beats.append(
                Beat(
                    r_index=r_index,
                    r_offset_s=r_off,
                    end_index=end_index,
                    samples=samples.astype(np.float32),
                    quality=status,
                    inverted=inverted,
                    rr_s=rr_s,
                )
            )
        if self._flushed:
            self._pending.clear()
        # keep the detections a block still to assess or a beat still to come may count: a
        # later beat's R is at or after the last R, and its window starts block_s before
        keep = self._next_block
        if self._prev_r is not None:
            keep = min(keep, math.floor(self._prev_r) - self._block_n)
        if self._pending:
            keep = min(
                keep, math.floor(self._pending[0][0] + self._beat_offsets[-1]) - self._block_n
            )
        while self._detections and self._detections[0][0] < keep:
            self._detections.popleft()

    # -- quality -------------------------------------------------------------------------------

    def _assess_blocks(self, out: FrontendOutput) -> None:
        n = self.samples_seen
        lag = self._block_lag_n
        while self._next_block + self._block_n + lag <= n:
            start = self._next_block
            stop = start + self._block_n
            status, detail = self._assess(start, stop, self._block_amps(start, stop, stop + lag))
            out.blocks.append(QualityBlock(start, stop, status, detail))
            self._next_block = stop

    def _block_amps(self, start: int, stop: int, decided_by: int | None) -> list[float]:
        """QRS amplitudes of the detections in ``[start, stop)`` decided by ``decided_by``
        (``None``: all so far)."""
        return [
            a
            for r, t, a in self._detections
            if start <= r < stop and (decided_by is None or t <= decided_by)
        ]

    def _assess(self, start: int, stop: int, amps: list[float]) -> tuple[str, str]:
        """Quality of samples ``[start, stop)`` (clipped to the stream and the ring), given
        the QRS peak-to-peak amplitudes ``amps`` (mV) of the beats detected there."""
        start = max(start, self._oldest())
        nonfinite = self._nonfinite
        return assess(
            self._view(self._x, start, stop),
            self._view(self._y, start, stop),
            None if nonfinite is None else self._view(nonfinite, start, stop),
            amps,
            self.config,
            clip_n=self._clip_n,
            curv_step=self._curv_step,
            curv_scale=self._curv_scale,
        )

# -- whole records ------------------------------------------------------------------------------


def detect_r_peaks(
    signal: np.ndarray, fs_hz: float, config: FrontendConfig | None = None
) -> np.ndarray:
    """R-peak sample indices (int64, sorted) of a whole record (mV, 1-D), by the same
    streaming detector as :class:`BeatFrontend` (flushed at the end)."""
    fe = BeatFrontend(fs_hz, config)
    fe._r_log = []
    fe.push(signal)
    fe.flush()
    return np.asarray(fe._r_log, dtype=np.int64)


def extract_beats(
    signal: np.ndarray, fs_hz: float, config: FrontendConfig | None = None
) -> list[Beat]:
    """Every beat of a whole record (mV, 1-D), exactly as streaming it would give them."""
    fe = BeatFrontend(fs_hz, config)
    beats = fe.push(signal).beats
    beats.extend(fe.flush().beats)
    return beats
