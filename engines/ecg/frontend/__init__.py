"""Streaming ECG front end: band-pass, Pan–Tompkins R peaks, beats and signal quality.

One :class:`BeatFrontend` per stream (per wearable). :meth:`BeatFrontend.push` takes the next
samples of the stream (mV, any length, any chunking) and returns the beats and quality blocks
that became complete; all state (filter states, detector thresholds, a ring buffer of recent
samples) is carried between calls. Pure numpy/scipy, no torch. One thread drives one frontend
(the stream's shard); frontends are independent.

Signal path (``fs_hz`` 100..2048 Hz, everything causal and stateful):

- Non-finite input samples (NaN/Inf) are replaced by the last finite value before anything
  else (0.0 if the stream starts with them), so no filter state is ever poisoned; they are
  remembered and mark the quality of everything that overlaps them ``"nan"``.
- Morphology band (the beats): Butterworth high-pass ``morph_band_hz[0]`` (baseline wander),
  Butterworth low-pass ``morph_band_hz[1]`` (capped at 0.45 fs; it is also the anti-alias
  filter of the resampling to :data:`BEAT_FS_HZ`) and mains notches (``notch_hz``), one
  ``sosfilt`` cascade with carried state.
- Pan–Tompkins detection signal: Butterworth band-pass ``qrs_band_hz`` (5–15 Hz) -> the
  five-point derivative ``(fs/8)(x[n] + 2x[n-1] - 2x[n-3] - x[n-4])`` (mV/s) -> squaring ->
  moving-window integration over ``mwi_s`` (150 ms): ``(mV/s)^2``, independent of fs.
- Filter states start at the steady state of the first sample, so a DC offset at the start
  makes no transient.

Detection (Pan & Tompkins 1985, on the integrated signal). A *candidate* is a sample of the
integrated signal that is higher than the ``peak_window_s`` before it and not lower than the
``peak_window_s`` after it; it is decided once those following samples have arrived, so no
decision depends on where a chunk ended. Candidates are classified in time order with the
adaptive levels SPKI/NPKI (signal/noise peak levels, updated 1/8 towards each peak),
THRESHOLD I = NPKI + 0.25 (SPKI - NPKI) and THRESHOLD II = THRESHOLD I / 2:

- learning phase: the first ``learn_s`` seconds set SPKI = max/3 and NPKI = mean/2 of the
  integrated signal, then their candidates are classified; while those seconds hold no
  candidate (a lead still off, a flat line) the learning phase starts again after them;
- refractory period ``refractory_s`` (200 ms): a candidate that close to the last QRS is
  ignored (it is the same complex);
- T-wave discrimination: a candidate within ``twave_s`` (360 ms) of the last QRS whose
  steepest slope is below ``twave_slope_ratio`` (1/2) of that QRS's is a T wave (noise);
- search-back: when no QRS came for ``searchback_rr`` (1.66) x the RR average, the highest
  noise candidate since the last QRS above THRESHOLD II (and not a T wave) becomes a QRS
  (SPKI updated 1/4); the RR average is the mean of the last 8 RR intervals that were
  92..116 % of it (``rr_initial_s`` until there is one; after 8 irregular intervals in a
  row it restarts from those, so a lasting change of rate is followed);
- an artefact far above the QRS level counts at most ``spki_step_max`` x SPKI in SPKI's
  update, so the beats after it still cross THRESHOLD II;
- relearning (the "reset"): after ``relearn_s`` with no QRS (lead off, a gain change), the
  levels are learnt again from the last ``learn_s`` seconds and the candidates there are
  classified again.

R peak. The R peak is the largest deflection of the morphology-band signal in
``r_window_s`` before the candidate, in the stream's current polarity (the sign of the
dominant QRS deflection, voted over the last ``polarity_beats`` beats with hysteresis
``polarity_hysteresis``): an inverted lead gives negative R peaks, which are located as
minima and flipped back (``Beat.inverted``). A parabola through the peak and its neighbours
refines it below one sample. The filter's delay for a QRS-shaped pulse (measured once at
construction) is subtracted, so ``Beat.r_index + Beat.r_offset_s * fs`` is the R peak in
the input's time base.

Beats. ``BEAT_PRE_S`` before to ``BEAT_POST_S`` after the refined R, taken from the
morphology-band signal with cubic (Catmull-Rom) interpolation at :data:`BEAT_FS_HZ`:
float32 ``(BEAT_SAMPLES,)`` in mV, R at sample 64. A beat is emitted by the ``push`` that
delivers its last needed sample (``Beat.end_index``: about ``BEAT_POST_S`` + 10 ms after R),
unless the detection itself came later (a search-back detection comes up to 1.66 RR after
its R). A beat that would need samples before the first one is not emitted.

Quality. Statuses, worst first:

- ``"nan"``: non-finite input samples in the window;
- ``"lead_off"``: a constant line (peak-to-peak <= ``lead_off_ptp_mV``), or the input pinned
  at its maximum or minimum for ``lead_off_fraction`` of the window;
- ``"saturated"``: clipping, the window's maximum or minimum value held for ``clip_min_s``
  in all (a peak of a real signal reaches its exact extreme value in one or two samples);
- ``"flat"``: peak-to-peak of the morphology band below ``flat_ptp_mV``;
- ``"noisy"``: (a) muscle noise: the median absolute curvature of the morphology band
  (second difference over steps of ~1/128 s, per s^2, so it reads the same at any fs),
  relative to the band's peak-to-peak amplitude, above ``curvature_max_per_s2``. The
  waves of a clean ECG are smooth, so over a window (mostly the quiet parts between waves)
  it stays at 10-90 /s^2 for every simulated person, while EMG-like noise of rms ``s`` in
  the band reads about 24,000 x ``s`` / peak-to-peak: the default 400 /s^2 flags EMG above
  ~1.7 % of the peak-to-peak amplitude (about 15 dB SNR of EMG alone); (b) artefacts: the
  band's peak-to-peak above ``artefact_ratio_max`` times the median QRS amplitude of the
  beats detected in the window (electrode motion; at most 1.6 x on simulated records,
  with noise or not); (c) no QRS detected in the window;
- else ``"ok"``.

- Blocks (:class:`QualityBlock`) tile the stream on a fixed grid of ``block_s`` (2 s);
  a block is assessed once ``block_lag_s`` has passed after its end (so the detections
  inside it are decided) and counts only detections decided by then.
- A beat is assessed on the ``block_s`` window of the stream that ends at its
  ``end_index`` (it covers the whole beat and the time before it), with the same tests,
  counting the detections up to and including its own — so it is emitted without waiting
  for its block to close, and its status never depends on the chunking.

Chunk invariance: ``push`` in chunks of 1, 7, 250 or 10,000 samples gives bitwise identical
beats and blocks (tests pin it): filters run sample-recursively with carried state, every
decision is tied to a sample index, and ring-buffer positions depend only on the sample
index. Cost: a few tens of microseconds per 62-sample chunk (no per-sample Python loops;
per-candidate and per-beat Python work only).

Modules: :mod:`~engines.ecg.frontend.config` (the beat contract, outputs and configuration),
:mod:`~engines.ecg.frontend.filters` (filter design per rate, the filtering kernels, beat
interpolation), :mod:`~engines.ecg.frontend.quality` (the quality tests of one window) and
:mod:`~engines.ecg.frontend.stream` (:class:`BeatFrontend` and the whole-record functions).
"""

from engines.ecg.frontend import config as _config
from engines.ecg.frontend import stream as _stream
from engines.ecg.frontend.config import *  # noqa: F403 - the names its __all__ lists
from engines.ecg.frontend.stream import *  # noqa: F403 - the names its __all__ lists

__all__ = [*_config.__all__, *_stream.__all__]
