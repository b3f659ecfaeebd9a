"""What the PET models train and are tested on: simulated 2-minute / 10-minute pairs of the
NEMA IEC phantom (:mod:`devices.pet_sim`), cached, and the slices of a site's own scans.

Seeds: each purpose draws from its own stream, ``SeedSequence([seed, tag])`` with the tags of
:data:`PURPOSE_TAGS`, so training, validation and test realisations never coincide. Training
and validation slices vary (height through the spheres, rotation, shift, sphere ratio); test
slices are the standard sphere plane, each with independent noise, as the paper's phantom.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np

from devices.pet_sim import DEFAULT_CONFIG, PetPair, PetScanConfig, simulate_pairs
from devices.volumes import VolumeFailure, find_inputs, read_volumes
from engines.errors import ConfigError
from engines.pet.train import TrainImages

__all__ = ["CACHE_DIR", "PURPOSE_TAGS", "images_from", "pairs_for", "training_images"]

Purpose = Literal["train", "validation", "test"]
PURPOSE_TAGS: dict[str, int] = {"train": 71, "validation": 72, "test": 73}
CACHE_DIR = Path(__file__).resolve().parents[2] / ".data" / "pet"
_CACHE_VERSION = 1


def _stream_seed(seed: int, purpose: Purpose) -> int:
    return int(np.random.SeedSequence([int(seed), PURPOSE_TAGS[purpose]]).generate_state(1)[0])


def pairs_for(purpose: Purpose, n: int, *, seed: int = 0,
              config: PetScanConfig = DEFAULT_CONFIG) -> list[PetPair]:
    """``n`` simulated pairs for ``purpose`` (see the module docstring)."""
    return simulate_pairs(n, seed=_stream_seed(seed, purpose), config=config,
                          vary=purpose != "test")


def _cache_path(n: int, seed: int, config: PetScanConfig, cache_dir: Path) -> Path:
    key = json.dumps({"v": _CACHE_VERSION, "config": asdict(config)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache_dir / f"train_seed{seed}_n{n}_{digest}.npz"


def training_images(n: int, *, seed: int, halves: bool, n_val: int,
                    config: PetScanConfig = DEFAULT_CONFIG,
                    cache_dir: Path | None = CACHE_DIR) -> TrainImages:
    """``n`` simulated training slices (2-minute images and their half-count images), cached
    under ``cache_dir``, and ``n_val`` validation pairs."""
    path = None if cache_dir is None else _cache_path(n, seed, config, Path(cache_dir))
    if path is not None and path.exists():
        with np.load(path) as z:
            short, halves_stack = z["short"], z["halves"]
    else:
        pairs = pairs_for("train", n, seed=seed, config=config)
        short = np.stack([p.short for p in pairs]).astype(np.float32)
        halves_stack = np.stack([np.stack(p.short_halves) for p in pairs]).astype(np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, short=short, halves=halves_stack)
            tmp.replace(path)
    validation = tuple((p.short, p.long) for p in pairs_for("validation", n_val, seed=seed,
                                                              config=config))
    return TrainImages(short=short, halves=halves_stack if halves else None,
                       validation=validation,
                       source={"simulated": n, "seed": seed, "config": asdict(config),
                               "slices": "devices.pet_sim.simulate_pairs(vary=True), "
                                         "stream SeedSequence([seed, 71])"})


def images_from(inputs: Sequence[Path], *, force: bool = False) -> TrainImages:
    """The transaxial slices of the PET volumes in ``inputs`` (DICOM files or folders, NIfTI)
    as training images, zero-padded to the largest slice; any item that cannot be read is
    refused with its one line (:class:`~engines.errors.ConfigError`)."""
    slices: list[np.ndarray] = []
    labels: list[str] = []
    for item in read_volumes(find_inputs(list(inputs)), modality="PT", force=force):
        if isinstance(item, VolumeFailure):
            raise ConfigError(f"train pet --from: {item.message}")
        slices.extend(item.values)
        labels.append(item.source.label)
    if not slices:
        raise ConfigError(f"train pet --from: no PET volume in {[str(p) for p in inputs]}")
    h = max(s.shape[0] for s in slices)
    w = max(s.shape[1] for s in slices)
    short = np.zeros((len(slices), h, w), np.float32)
    for k, s in enumerate(slices):
        short[k, :s.shape[0], :s.shape[1]] = s
    if not np.isfinite(short).all():
        raise ConfigError("train pet --from: the volumes hold NaN or infinite voxels")
    return TrainImages(short=short, source={"from": labels, "volumes": len(labels)})
