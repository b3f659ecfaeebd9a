"""Frozen specs of the shipped codecs: an encoder and a decoder engine per codec.

======================  ============  =====  ==========================================
codec                   frame         loss   weights (one file, both halves)
======================  ============  =====  ==========================================
``wideband`` (default)  1024 (64 ms)  MAE    ``codec_wideband_mae.pt``
``lowdelay``            256 (16 ms)   MAE    ``codec_lowdelay_mae.pt``
``wideband-multiband``  1024 (64 ms)  MB     ``codec_wideband_multiband.pt`` (paper §4)
``lowdelay-multiband``  256 (16 ms)   MB     ``codec_lowdelay_multiband.pt``
======================  ============  =====  ==========================================

The default of each frame size is the loss that measured better on held-out real speech
(``sigstream eval codec``: plain MAE beats the paper's multi-band loss on PESQ-WB, SNR and the
4-8 kHz log-spectral distance at every bitrate; multi-band is better only at 2-4 kHz and on
STOI). Both stay shipped: the multi-band models are the paper's method and its ablation.

Encoder ``(1, frame)`` float32 samples in [-1, 1] -> ``(4, frame / 16)`` latent in (-1, 1);
decoder the reverse. The card (``.json`` beside the weights) lists the calibrated operating
points (``kbps`` -> quantiser ``step``). Written by :func:`engines.codec.train.train_codec`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engines.codec.configs import CONFIGS
from engines.spec import ModelSpec, deferred_build

__all__ = ["CODECS", "WEIGHTS_DIR", "CodecSpecs", "weights_name"]

#: The shipped weights of this family, with their training cards.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_name(config: str, loss: str) -> str:
    """``codec_<config>_<loss>``: the stem of the weights and card files."""
    return f"codec_{config}_{loss}"


# Imported when built: the link ends load compiled engines without torch.
_NET = "engines.codec.model:CodecNet"


class CodecSpecs:
    """The encoder and decoder spec of one shipped codec."""

    def __init__(self, key: str, config: str, loss: str) -> None:
        cfg = CONFIGS[config]
        stem = weights_name(config, loss)
        self.key, self.config, self.loss = key, cfg, loss
        extra = {"codec": key, "loss": loss, "frame": cfg.frame, "hop": cfg.hop}
        self.encoder = ModelSpec(
            name=f"{stem}_encoder", build=deferred_build(_NET, config, "encode"),
            input_shape=(1, cfg.frame), output_shape=cfg.latent_shape, weights=f"{stem}.pt",
            weights_dir=WEIGHTS_DIR,
            sample_rate_hz=float(cfg.fs), extra=extra,
            description=f"{cfg.frame}-sample frame -> {cfg.latent_shape} latent")
        self.decoder = ModelSpec(
            name=f"{stem}_decoder", build=deferred_build(_NET, config, "decode"),
            input_shape=cfg.latent_shape, output_shape=(1, cfg.frame), weights=f"{stem}.pt",
            weights_dir=WEIGHTS_DIR,
            sample_rate_hz=float(cfg.fs), extra=extra,
            description=f"{cfg.latent_shape} latent -> {cfg.frame}-sample frame")


    def with_weights(self, path: Path) -> CodecSpecs:
        """The same codec with weights from ``path`` (absolute: it wins over ``weights_dir``)."""
        out = object.__new__(CodecSpecs)
        out.__dict__.update(self.__dict__)
        out.encoder = replace(self.encoder, weights=str(path.resolve()))
        out.decoder = replace(self.decoder, weights=str(path.resolve()))
        return out


CODECS: dict[str, CodecSpecs] = {
    "wideband": CodecSpecs("wideband", "wideband", "mae"),
    "lowdelay": CodecSpecs("lowdelay", "lowdelay", "mae"),
    "wideband-multiband": CodecSpecs("wideband-multiband", "wideband", "multiband"),
    "lowdelay-multiband": CodecSpecs("lowdelay-multiband", "lowdelay", "multiband"),
}
