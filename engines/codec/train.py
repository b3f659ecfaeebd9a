"""Training of the speech codec (paper §4) and calibration of its bitrates.

Entry point :func:`train_codec` — ``sigstream train codec --config wideband|lowdelay
--loss mae|multiband --kbps 12,16,24,32 --seed N``.

Data: the text-to-speech corpus of :mod:`engines.codec.speech` (15 voices, about 19 minutes;
the paper used 15 minutes of one speaker); validation on two voices never trained on. Real
speech is kept out entirely: it is the evaluation set (:mod:`engines.codec.evaluate`).

Each step draws ``batch`` frames at random places of the corpus at a random level (-15..+4 dB
around the corpus level: a codec must not depend on the speaker's loudness), and a quantiser
step per frame, log-uniform over the config's ``step_range``. The decoder gets the rounded latent
with a straight-through gradient; the loss is the distortion (``mae`` on the waveform or the
``multiband`` loss of :mod:`engines.codec.losses`) plus the code length of the latent under the
Laplace model, which only trains the model's scales (the latent is detached there: the encoder
is trained for distortion alone, the bitrate is set by the step). Adam, cosine decay to zero,
fixed steps, ``threads`` torch threads: the same seed and threads give the same weights.

Calibration: for every requested bitrate, the quantiser step whose range-coded bitstream
measures that many kbps on 60 s of training speech (4 s per voice), by bisection on the step;
the card lists each operating point with its step and the kbps then measured on the
validation voices.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from engines import training
from engines.backends.eager import Infer, eager_infer
from engines.codec.bitstream import LatentCoder, measured_kbps
from engines.codec.codec import decode_signal, encode_signal, split_frames
from engines.codec.configs import CONFIGS, CodecConfig
from engines.codec.losses import LOSSES, MultiBandLoss, band_filters, band_weights
from engines.codec.model import CodecNet
from engines.codec.quality import snr_db
from engines.codec.specs import WEIGHTS_DIR, weights_name
from engines.codec.speech import TTS_VOICES, VALIDATION_VOICES, load_corpus

__all__ = ["CodecTrainConfig", "calibrate_step", "train_codec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodecTrainConfig:
    steps: int = 8000
    batch: int = 32
    lr: float = 1.5e-3
    gain_db: tuple[float, float] = (-15.0, 4.0)
    calibration_s_per_voice: float = 4.0


def _transforms(net: CodecNet) -> tuple[Infer, Infer]:
    """The eager encoder and decoder as functions of arrays (frames -> latents -> frames)."""
    decode = eager_infer(net.decoder)
    return eager_infer(net.encoder), lambda latents: decode(np.ascontiguousarray(latents))


def calibrate_step(latents: np.ndarray, scales: np.ndarray, seconds: float, kbps: float,
                   step_range: tuple[float, float]) -> tuple[float, float]:
    """``(step, kbps measured)``: the step whose range-coded ``latents`` come closest to
    ``kbps`` (bisection on log step; the bitrate falls as the step grows)."""
    lo, hi = math.log(step_range[0] / 4), math.log(step_range[1] * 2)

    def rate(log_step: float) -> float:
        coder = LatentCoder(scales, math.exp(log_step))
        return measured_kbps([coder.encode(z) for z in latents], seconds)

    for _ in range(24):
        mid = 0.5 * (lo + hi)
        if rate(mid) > kbps:
            lo = mid
        else:
            hi = mid
    step = math.exp(0.5 * (lo + hi))
    return step, rate(math.log(step))


def train_codec(*, config: str = "wideband", loss: str = "mae",
                kbps: tuple[float, ...] = (12.0, 16.0, 24.0, 32.0), seed: int = 0,
                out_dir: Path | None = None, steps: int | None = None, threads: int = 2,
                data_dir: Path | None = None) -> dict[str, Any]:
    """Train one codec, calibrate its bitrates, write ``codec_<config>_<loss>.pt`` + ``.json``
    into ``out_dir`` (default: the shipped weights). Returns the card."""
    if config not in CONFIGS:
        raise ValueError(f"unknown codec config {config!r}; choose from {', '.join(CONFIGS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    if not kbps or any(not (0 < k <= 256) for k in kbps):
        raise ValueError(f"bitrates must be in (0, 256] kbps, got {kbps}")
    tcfg = CodecTrainConfig() if steps is None else CodecTrainConfig(steps=steps)
    cfg = CONFIGS[config]
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        corpus_kw = {} if data_dir is None else {"root": data_dir}
        train = load_corpus(TTS_VOICES, **corpus_kw)
        valid = load_corpus(VALIDATION_VOICES, **corpus_kw)
        net, history, train_s, weights = _fit(cfg, loss, tcfg, seed, train)
        card = _calibrate(cfg, net, train, valid, kbps, tcfg)
    finally:
        torch.set_num_threads(previous)
    stem = weights_name(config, loss)
    # Not training.save_weights: the archive inside a .pt is named after the file torch writes,
    # and the shipped codec weights were written straight to <stem>.pt (their sha256 says so).
    torch.save(net.state_dict(), out / f"{stem}.pt")
    card = {
        "name": stem,
        "config": asdict(cfg),
        "loss": loss,
        "band_weights": None if weights is None else [round(float(w), 6) for w in weights],
        "seed": seed,
        "threads": threads,
        "train": {**asdict(tcfg), "voices": [v.name for v in TTS_VOICES],
                  "seconds": round(sum(a.size for a in train.values()) / cfg.fs, 1),
                  "wall_s": round(train_s, 1), "loss_history": history},
        "validation_voices": [v.name for v in VALIDATION_VOICES],
        **card,
        # The entropy model's tables, so that a link end reads them without torch.
        "laplace_scales": net.laplace_scales().tolist(),
        "sha256": hashlib.sha256((out / f"{stem}.pt").read_bytes()).hexdigest(),
    }
    training.write_card(out / f"{stem}.json", card)
    log.info("wrote %s (%s)", out / f"{stem}.pt", ", ".join(
        f"{p['kbps']:g} kbps: step {p['step']:.4f}" for p in card["operating_points"]))
    return card


def _fit(cfg: CodecConfig, loss: str, tcfg: CodecTrainConfig, seed: int,
         train: dict[str, np.ndarray]) -> tuple[CodecNet, list[list[float]], float,
                                                 np.ndarray | None]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = CodecNet(cfg, role="encode")
    audio = np.concatenate(list(train.values())).astype(np.float32)

    def starts(n: int) -> np.ndarray:
        return rng.integers(0, audio.size - cfg.frame, n)

    weights = None
    if loss == "multiband":
        filters = band_filters(cfg.fs)
        sample = audio[starts(4000)[:, None] + np.arange(cfg.frame)[None, :]]
        weights = band_weights(sample, filters)
        distortion: torch.nn.Module = MultiBandLoss(filters, weights)
    else:
        distortion = torch.nn.L1Loss()
    opt = torch.optim.Adam(net.parameters(), lr=tcfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, tcfg.steps) / tcfg.steps)))
    lo, hi = math.log(cfg.step_range[0]), math.log(cfg.step_range[1])
    laplace_half = math.log(0.5)
    history: list[list[float]] = []
    running = np.zeros(2)
    t0 = time.perf_counter()
    net.train()
    for step in range(1, tcfg.steps + 1):
        idx = starts(tcfg.batch)[:, None] + np.arange(cfg.frame)[None, :]
        gain = 10 ** (rng.uniform(*tcfg.gain_db, (tcfg.batch, 1)) / 20)
        x = torch.from_numpy((audio[idx] * gain).astype(np.float32))[:, None, :]
        q_step = torch.from_numpy(np.exp(rng.uniform(lo, hi, (tcfg.batch, 1, 1)))).float()
        z = net.encoder(x)
        z_hat = z + (torch.round(z / q_step) * q_step - z).detach()  # straight-through
        y = net.decoder(z_hat)
        d = distortion(y, x)
        # Code length of the noisy latent under Laplace(0, b): -log2 P(bin of width step).
        z_noisy = z.detach() + q_step * (torch.rand_like(z) - 0.5)
        b = net.log_scale.exp()
        upper = (z_noisy.abs() + q_step / 2) / b
        lower = functional.relu(z_noisy.abs() - q_step / 2) / b
        p = torch.exp(laplace_half - lower) - torch.exp(laplace_half - upper)
        inside = (z_noisy.abs() < q_step / 2).float()  # the zero bin spans both sides
        p = p * (1 + inside)
        bits = -torch.log2(p.clamp_min(1e-9)).sum(dim=(1, 2)).mean()
        opt.zero_grad(set_to_none=True)
        (d + 1e-3 * bits).backward()
        opt.step()
        sched.step()
        running += (d.item(), bits.item())
        if step % 250 == 0:
            avg = running / 250
            history.append([step, round(float(avg[0]), 6), round(float(avg[1]), 2)])
            log.info("step %d/%d  distortion %.5f  bits/frame %.1f  %.0f s", step, tcfg.steps,
                     avg[0], avg[1], time.perf_counter() - t0)
            running[:] = 0
    net.eval()
    return net, history, time.perf_counter() - t0, weights


def _latents(cfg: CodecConfig, net: CodecNet, audio: np.ndarray) -> np.ndarray:
    encode, _ = _transforms(net)
    return encode(split_frames(audio, cfg))


def _calibrate(cfg: CodecConfig, net: CodecNet, train: dict[str, np.ndarray],
               valid: dict[str, np.ndarray], kbps: tuple[float, ...],
               tcfg: CodecTrainConfig) -> dict[str, Any]:
    n = int(tcfg.calibration_s_per_voice * cfg.fs)
    calib = np.concatenate([a[a.size // 2:a.size // 2 + n] for a in train.values()])
    latents = _latents(cfg, net, calib)
    scales = net.laplace_scales()
    encode, decode = _transforms(net)
    points = []
    for target in sorted(kbps):
        step, got = calibrate_step(latents, scales, calib.size / cfg.fs, target, cfg.step_range)
        coder = LatentCoder(scales, step)
        val: dict[str, Any] = {}
        for name, audio in valid.items():
            packets = encode_signal(audio, cfg, encode, coder)
            decoded = decode_signal(packets, audio.size, cfg, decode, coder)
            val[name] = {"kbps": round(measured_kbps(packets, audio.size / cfg.fs), 2),
                         "snr_db": round(snr_db(audio, decoded), 2)}
        points.append({"kbps": target, "step": step, "calibration_kbps": round(got, 3),
                       "validation": val})
    return {"operating_points": points,
            "calibration": f"{tcfg.calibration_s_per_voice:g} s per training voice"}
