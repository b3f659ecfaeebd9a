"""``sigstream ecg ...``: enrol, list and remove users, and explain beats as PNG heatmaps.

Offline (``--file``): the recording goes through the same streaming front end as the service
and the eager embedding model (:mod:`engines.ecg.enrolment`). Live (``--stream``): the command
subscribes to a running service's results for that wearable; the wearable asks for what the
command needs with a header flag (``embed`` for enrolment, ``explain`` for heatmaps, e.g.
``sigstream source ecg-sim --embed``), and beats whose signal quality is not ``ok`` are
skipped. Templates are embeddings in the SQLite store, never raw ECG.

Live enrolment trusts only the enrolling device: with keys (``--keys``), each beat result
carries the key its wearable authenticated with (``peer``) and only beats whose key is the
``--device-key`` are enrolled, so another sender using the same stream id enrols nothing.
Without keys anyone who can reach the service could feed the stream, so live enrolment runs
only with ``--insecure``.

Runs in the CLI's main thread. Exit status: 0 done, 1 nothing usable (no good beats, timeout),
2 bad arguments or files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from stream.results import ResultsClient
from stream.security import ClientSecurity

__all__ = ["collect_beat_results", "run_ecg_command"]

_LIVE_ENROL_BEATS = 20
_POLL_S = 0.1


def run_ecg_command(args: argparse.Namespace, *, db: Path, templates_key: Path | None = None,
                    security: ClientSecurity | None = None, device_key: str | None = None
                    ) -> int:
    """Dispatch ``sigstream ecg <action>`` (``args.action``) against the store ``db``
    (encrypted with ``templates_key``). Live commands subscribe with ``security``; live
    enrolment takes only beats of ``device_key`` (z85)."""
    from devices.frames import DeviceError
    from engines.ecg.templates import TemplateStore, TemplateStoreError
    from engines.errors import EngineError

    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with TemplateStore(db, key_file=templates_key) as store:
            if args.action == "users":
                return _users(store, as_json=args.json)
            if args.action == "remove":
                if store.remove(args.user):
                    print(f"removed {args.user!r} from {db}")
                    return 0
                print(f"sigstream ecg: no user {args.user!r} in {db}", file=sys.stderr)
                return 1
            if (args.file is None) == (args.stream is None):
                print("sigstream ecg: give either --file or --stream", file=sys.stderr)
                return 2
            if args.action == "enroll":
                return _enroll(args, store, security, device_key)
            if args.action == "explain":
                return _explain(args, store, security)
    except TemplateStoreError as exc:
        print(f"sigstream ecg: error: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:  # nothing usable in the recording (no good beats)
        print(f"sigstream ecg: {exc}", file=sys.stderr)
        return 1
    except (DeviceError, OSError, ValueError) as exc:
        print(f"sigstream ecg: error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(args.action)  # argparse allows only the actions above


def _users(store: Any, *, as_json: bool) -> int:
    users = store.users()
    if as_json:
        print(json.dumps([dataclasses.asdict(u) for u in users]))
        return 0
    if not users:
        print(f"no users enrolled in {store.path}")
    for u in users:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(u.updated_s))
        print(f"{u.user:24s} {u.n_beats:5d} beats  model {u.model_id[:12]}  updated {updated}")
    return 0


def _record(args: argparse.Namespace) -> tuple[np.ndarray, float]:
    from devices.ecg_files import load_ecg

    record = load_ecg(args.file, fs_hz=args.fs, column=args.column,
                      max_bytes=max(1, round(args.max_file_mb * 2**20)))
    return record.signal, record.fs_hz


def _enroll(args: argparse.Namespace, store: Any, security: ClientSecurity | None,
            device_key: str | None) -> int:
    from engines.ecg.enrolment import embed_beats, enrolment_beats
    from engines.ecg.specs import ECG_SPECS

    spec = ECG_SPECS["embedding"]
    if args.file is not None:
        signal, fs_hz = _record(args)
        found = enrolment_beats(signal, fs_hz, max_beats=args.beats)
        embeddings = embed_beats(spec, found.samples())
        model_id = spec.weights_sha256()
        source = f"{args.file} ({found.total} beats found, {len(found.beats)} used)"
    else:
        if security is None and not args.insecure:
            print(f"sigstream ecg: live enrolment without --keys would enrol whatever anyone "
                  f"sends as {args.stream!r}; give --keys and --device-key, or --insecure",
                  file=sys.stderr)
            return 2
        if security is not None and device_key is None:
            print("sigstream ecg: give --device-key, the enrolling wearable's public key: only "
                  "its beats are enrolled", file=sys.stderr)
            return 2
        wanted = args.beats or _LIVE_ENROL_BEATS
        foreign = 0

        def usable(body: dict[str, Any]) -> bool:
            nonlocal foreign
            if device_key is not None and body.get("peer") != device_key:
                foreign += 1  # another device on this stream id: never enrolled
                return False
            return body.get("quality") == "ok" and isinstance(body.get("embedding"), bytes)

        bodies = collect_beat_results(args.results, args.stream, wanted, timeout_s=args.timeout,
                                      usable=usable, security=security)
        if foreign:
            print(f"sigstream ecg: refused {foreign} beats of {args.stream!r} sent by another "
                  "key than --device-key", file=sys.stderr)
        if len(bodies) < wanted:
            print(f"sigstream ecg: {len(bodies)} of {wanted} beats with an embedding from "
                  f"{args.stream!r} in {args.timeout:g} s (does the wearable send embed=true?)",
                  file=sys.stderr)
            return 1
        embeddings = np.stack([np.frombuffer(b["embedding"], "<f4") for b in bodies])
        model_id = str(bodies[0].get("model"))
        source = f"live stream {args.stream!r} ({len(bodies)} beats)"
    record = store.enroll(args.user, embeddings, model_id=model_id)
    print(f"enrolled {record.user!r} from {source}: template of {record.n_beats} beats in "
          f"{store.path}")
    return 0


def _explain(args: argparse.Namespace, store: Any, security: ClientSecurity | None) -> int:
    from engines.ecg.gradcam import explanation_png
    from stream.paths.ecg.stages import unpack_explanation

    args.out.mkdir(parents=True, exist_ok=True)
    if args.file is not None:
        explained = _explain_file(args, store)
    else:
        bodies = collect_beat_results(
            args.results, args.stream, args.beats, timeout_s=args.timeout,
            usable=lambda b: isinstance(b.get("gradcam"), dict), security=security,
        )
        explained = [
            (int(b.get("beat") or i), *unpack_explanation(b["gradcam"]),
             f"{b['gradcam'].get('target')}: cosine {b['gradcam'].get('score', 0):.3f}, "
             f"decision {b.get('decision')}")
            for i, b in enumerate(bodies)
        ]
    if not explained:
        print("sigstream ecg: no beat to explain (is anyone enrolled? does the wearable send "
              "explain=true?)", file=sys.stderr)
        return 1
    for index, spectrogram, heatmap, verdict in explained:
        path = args.out / f"beat-{index:05d}.png"
        path.write_bytes(explanation_png(spectrogram, heatmap))
        print(f"{path}: {verdict}")
    return 0


def _explain_file(args: argparse.Namespace, store: Any
                  ) -> list[tuple[int, np.ndarray, np.ndarray, str]]:
    """Grad-CAM of the first good beats of a recording against ``--user`` (default: each
    beat's best-matching enrolled user)."""
    from engines.ecg.cnn import EcgEmbedder  # noqa: F401 - the cast's type
    from engines.ecg.enrolment import embed_beats, enrolment_beats
    from engines.ecg.gradcam import gradcam
    from engines.ecg.specs import ECG_SPECS

    spec = ECG_SPECS["embedding"]
    names, templates = store.templates(spec.weights_sha256())
    if not names:
        raise ValueError(f"no user enrolled in {store.path} for the shipped model")
    if args.user is not None and args.user not in names:
        raise ValueError(f"{args.user!r} is not enrolled in {store.path}")
    signal, fs_hz = _record(args)
    beats = enrolment_beats(signal, fs_hz, max_beats=args.beats).samples()
    model = cast("EcgEmbedder", spec.load())
    embeddings = embed_beats(spec, beats, model=model)
    out = []
    for i, (beat, emb) in enumerate(zip(beats, embeddings, strict=True)):
        target = args.user or names[int(np.argmax(templates @ emb))]
        cam = gradcam(model, beat, templates[names.index(target)])
        out.append((i + 1, cam.spectrogram, cam.heatmap, f"{target}: cosine {cam.score:.3f}"))
    return out


def collect_beat_results(
    endpoint: str,
    stream: str,
    count: int,
    *,
    timeout_s: float,
    usable: Callable[[dict[str, Any]], bool],
    security: ClientSecurity | None = None,
) -> list[dict[str, Any]]:
    """Subscribe to ``result.ecg/<stream>`` at ``endpoint`` (a CURVE client with
    ``security``) and return the first ``count`` beat results for which ``usable(body)`` holds
    (fewer after ``timeout_s``)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with ResultsClient(endpoint, topic=f"result.ecg/{stream}", security=security) as client:
        while len(out) < count and (left_s := deadline - time.monotonic()) > 0:
            for msg, _ in client.receive(min(left_s, _POLL_S)):
                body = msg.payload
                # The topic filter is a prefix: "w1" also matches "w10".
                if msg.stream == stream and isinstance(body, dict) \
                        and body.get("type") == "beat" and usable(body):
                    out.append(body)
                    if len(out) == count:
                        break
    return out
