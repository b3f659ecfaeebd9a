"""The baseline the service is measured against: one process, one message at a time.

PULL -> :func:`stream.wire.decode` -> :meth:`RoiDetector.prepare` -> the torch module in eager
mode on that one spectrum's windows (no batching across spectra, no compiled backend) ->
:meth:`RoiDetector.finish` -> PUB. No queues of its own beyond ZeroMQ's, no shards, no workers:
what a first version of the service would look like. Bad input is answered with an error, as in
the service, so both see the same load.

Run by ``bench/pipeline.py`` as a spawned process (:func:`naive_main`); it reports its bound
endpoints on a ``multiprocessing`` pipe and runs until it reads ``"stop"`` from it.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from stream.errors import WireError
from stream.wire import decode, encode, error_message, result_message

__all__ = ["naive_main"]


def naive_main(
    *,
    ingest: str,
    publish: str,
    model: str,
    weights: str | None,
    threads: int,
    control: Any,
) -> None:
    """Serve until ``"stop"`` arrives on ``control`` (a ``multiprocessing`` pipe end), on which
    it first sends ``{"ingest", "publish"}`` (bound endpoints) or ``{"error"}``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from engines.errors import InputContractError
    from engines.roi.detector import RoiDetector
    from engines.roi.specs import ROI_SPECS, detector_config

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pub = ctx.socket(zmq.PUB)
    for sock in (pull, pub):
        sock.linger = 1000
    pub.sndhwm = 100_000
    try:
        torch.set_num_threads(threads)
        spec = ROI_SPECS[model]
        if weights is not None:
            spec = dataclasses.replace(spec, weights=str(Path(weights).resolve()))
        module = spec.load()
        detector = RoiDetector(detector_config(model))
        pull.bind(ingest)
        pub.bind(publish)
        with torch.inference_mode():  # warm up like the service does
            windows, plan = detector.prepare(np.random.default_rng(0).random(512))
            detector.finish(np.zeros(512), module(torch.from_numpy(windows)).numpy(), plan)
        control.send({
            "ingest": pull.getsockopt_string(zmq.LAST_ENDPOINT),
            "publish": pub.getsockopt_string(zmq.LAST_ENDPOINT),
        })
    except Exception as exc:
        control.send({"error": f"{type(exc).__name__}: {exc}"})
        pull.close(0)
        pub.close(0)
        ctx.term()
        return
    with torch.inference_mode():
        while not control.poll():
            if not pull.poll(100):
                continue
            frames = pull.recv_multipart()
            try:
                msg = decode(frames)
                windows, plan = detector.prepare(msg.payload)
                logits = module(torch.from_numpy(windows)).numpy()
                out = result_message("spectral", msg.header, detector.finish(
                    msg.payload, logits, plan))
            except WireError as exc:
                out = error_message(exc.code, exc.reason, stream=exc.stream, seq=exc.seq)
            except InputContractError as exc:
                out = error_message("input_contract", str(exc), stream=msg.stream, seq=msg.seq)
            pub.send_multipart(encode(out, topic=True))
    time.sleep(0.2)  # let the last results leave before closing
    pull.close(0)
    pub.close()
    ctx.term()
