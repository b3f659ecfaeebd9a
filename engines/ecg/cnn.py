"""The beat CNN of paper §3: spectrogram -> 3 x (conv + batch-norm + ReLU), 2 poolings -> head.

Both models take the raw beat, ``(B, 1, 192)`` float32 in mV at 256 Hz (the frontend's output),
and compute the spectrogram inside (:class:`BeatSpectrogram`, the transform of
:mod:`engines.ecg.spectrogram`), so a compiled engine does the whole job and the worker only
moves beats.

Trunk (shared by both heads), on the ``(B, 1, 13, 49)`` log-power spectrogram:

====================  ===============  ==================================================
layer                 output           why
====================  ===============  ==================================================
conv3x3-BN-ReLU       (c1, 13, 49)     local time-frequency texture (QRS, P, T energy)
maxpool 2x2           (c1, 6, 24)
conv3x3-BN-ReLU       (c2, 6, 24)
maxpool 2x2           (c2, 3, 12)
conv3x3-BN-ReLU       (c3, 3, 12)      last conv layer: the Grad-CAM target
flatten               c3 * 36          keeps *where* in time/frequency a feature fired:
                                       morphology timing is what identifies a person
====================  ===============  ==================================================

:class:`EcgClassifier` ends with dropout + linear -> ``(B, n_classes)`` logits (closed set).
:class:`EcgEmbedder` ends with dropout + linear -> ``dim`` -> L2 normalisation: ``(B, dim)``
unit vectors compared by cosine against enrolled templates (open set).

Default widths (24, 48, 96): about 3.5 M multiply-adds per beat, so one CPU core runs several
thousand beats/s at batch 32 under ONNX Runtime. (16, 32, 64) trained to twice the validation
EER of the embedding (0.72 % vs 0.36 %, same steps).
"""

from __future__ import annotations

import torch
from torch import nn

from engines.ecg.spectrogram import HOP, LOG_EPS, N_FFT, N_FRAMES, N_FREQ, NORM_EPS, dft_kernels

__all__ = ["BeatSpectrogram", "EcgClassifier", "EcgEmbedder", "EcgTrunk"]

DEFAULT_WIDTHS = (24, 48, 96)


class BeatSpectrogram(nn.Module):
    """``(B, 1, BEAT_SAMPLES)`` float32 beat in mV -> ``(B, 1, N_FREQ, N_FRAMES)`` log power.

    No trainable parameters: the DFT kernels are a buffer (saved in the state dict, so weights
    files pin the exact transform they were trained with).
    """

    def __init__(self) -> None:
        super().__init__()
        kernels = torch.from_numpy(dft_kernels()).float()
        self.kernels: torch.Tensor
        self.register_buffer("kernels", kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=-1, keepdim=True)
        x = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + NORM_EPS)
        # conv1d's zero padding is the "center" framing: frame t covers [4t - 32, 4t + 32).
        z = nn.functional.conv1d(x, self.kernels, stride=HOP, padding=N_FFT // 2)
        re, im = z[:, :N_FREQ], z[:, N_FREQ:]
        power = re.square() + im.square()
        return torch.log(power + LOG_EPS).unsqueeze(1)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    # no conv bias: the BatchNorm that follows has its own shift
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class EcgTrunk(nn.Module):
    """Beat ``(B, 1, 192)`` -> spectrogram -> features ``(B, c3, 3, 12)`` (see module doc).

    ``spectrogram(x)`` and ``features(s)`` are exposed separately for Grad-CAM.
    """

    def __init__(self, widths: tuple[int, int, int] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.spectrogram = BeatSpectrogram()
        self.conv1 = _conv_bn_relu(1, c1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = _conv_bn_relu(c1, c2)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _conv_bn_relu(c2, c3)
        self.out_shape = (c3, (N_FREQ // 2) // 2, (N_FRAMES // 2) // 2)

    @property
    def out_features(self) -> int:
        c, f, t = self.out_shape
        return c * f * t

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """Spectrogram ``(B, 1, F, T)`` -> last conv activations ``(B, c3, 3, 12)``."""
        return self.conv3(self.pool2(self.conv2(self.pool1(self.conv1(spec)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.spectrogram(x))


class _TrunkWithHead(nn.Module):
    """The shared :class:`EcgTrunk`, then a head (flatten, dropout, linear) to ``out_features``;
    a subclass says what the head's output is by :meth:`head_from_features`."""

    def __init__(
        self, out_features: int, widths: tuple[int, int, int], dropout: float
    ) -> None:
        super().__init__()
        self.trunk = EcgTrunk(widths)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(self.trunk.out_features, out_features)
        )

    def head_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_from_features(self.trunk(x))


class EcgClassifier(_TrunkWithHead):
    """Closed-set identification: beat ``(B, 1, 192)`` -> ``(B, n_classes)`` logits."""

    def __init__(
        self,
        n_classes: int = 18,
        widths: tuple[int, int, int] = DEFAULT_WIDTHS,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(n_classes, widths, dropout)


class EcgEmbedder(_TrunkWithHead):
    """Open-set embedding: beat ``(B, 1, 192)`` -> ``(B, dim)`` L2-normalised float32."""

    def __init__(
        self,
        dim: int = 64,
        widths: tuple[int, int, int] = DEFAULT_WIDTHS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dim, widths, dropout)

    def head_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        z = self.head(feats)
        # explicit rsqrt form (not F.normalize) keeps the exported graph to plain ops
        return z * torch.rsqrt(z.square().sum(dim=1, keepdim=True) + 1e-12)
