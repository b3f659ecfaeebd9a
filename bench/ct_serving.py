"""How a 512² CT slice is best served: eager on the whole slice, or engines on fixed tiles.

``python -m bench.ct_serving [--threads 2] [--repeats 5]`` prints, per model, the p50 wall time
of one 512² phantom slice (dose 0.25) through:

- ``eager_whole``: the torch module on the whole slice (no engine; fully convolutional);
- ``eager_tiles256``: the eager engine on 256² tiles with a 32 px margin (9 tiles);
- ``onnxruntime_tiles256``: ONNX Runtime on the same tiles;
- ``onnxruntime_whole512``: ONNX Runtime with a 512² item (the slice in one call);

and each one's largest difference from ``eager_whole`` (HU). Untrained weights (speed does not
depend on them); ``--weights-dir`` points at trained ones to see the tiling's effect on a
trained model. Engines are built without the accuracy gate; the differences printed are that
check, on the real slice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.ct.data import CtDataConfig, scanned_phantoms
from engines.ct.specs import CT_SPECS, CT_UNITS, TILE_MARGIN_PX
from engines.engine import load_engine
from engines.slices import denoise_slices
from engines.spec import ModelSpec

__all__ = ["bench", "main"]


def _p50(run: Any, repeats: int) -> tuple[float, np.ndarray]:
    out = run()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _whole(module: torch.nn.Module, hu: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(CT_UNITS.to_model(hu)[:, None])
        return CT_UNITS.from_model(module(x).numpy()[:, 0])


def bench(*, threads: int = 2, repeats: int = 5, weights_dir: Path | None = None,
          models: tuple[str, ...] = tuple(CT_SPECS)) -> dict[str, Any]:
    """The measurements above, as a dict (seconds and HU)."""
    torch.set_num_threads(threads)
    item = next(scanned_phantoms("test", 1, config=CtDataConfig(size_px=512), doses=(0.25,)))
    hu = item.low[0.25][None]
    report: dict[str, Any] = {"threads": threads, "repeats": repeats, "slice_px": 512}
    with tempfile.TemporaryDirectory() as tmp:
        for key in models:
            spec = CT_SPECS[key]
            if weights_dir is None:
                spec = dataclasses.replace(spec, weights_dir=Path(tmp))
                torch.manual_seed(0)
                torch.save(spec.build().state_dict(), spec.weights_path)
            else:
                spec = dataclasses.replace(spec, weights_dir=Path(weights_dir))
            row: dict[str, Any] = {}
            row["eager_whole_s"], ref = _p50(functools.partial(_whole, spec.load(), hu), repeats)
            for backend, tile in (("eager", 256), ("onnxruntime", 256), ("onnxruntime", 512)):
                tiled: ModelSpec = dataclasses.replace(spec, input_shape=(1, tile, tile),
                                                       output_shape=(1, tile, tile))
                t0 = time.perf_counter()
                engine = load_engine(tiled, backend, max_batch=9, threads=threads, check=False)
                build_s = time.perf_counter() - t0
                name = f"{backend}_{'tiles256' if tile == 256 else 'whole512'}"
                try:
                    seconds, out = _p50(functools.partial(
                        denoise_slices, engine, hu, tile=tile, margin=TILE_MARGIN_PX, batch=9,
                        units=CT_UNITS),
                        repeats)
                finally:
                    engine.close()
                row[f"{name}_s"] = seconds
                row[f"{name}_build_s"] = build_s
                row[f"{name}_max_diff_hu"] = float(np.max(np.abs(out - ref)))
            report[key] = row
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ct_serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--models", nargs="+", default=list(CT_SPECS), choices=list(CT_SPECS))
    args = parser.parse_args(argv)
    print(json.dumps(bench(threads=args.threads, repeats=args.repeats,
                           weights_dir=args.weights_dir, models=tuple(args.models)), indent=1))


if __name__ == "__main__":
    main()
