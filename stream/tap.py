"""Tap: subscribe to a service's results socket and print what arrives.

One line per message. A spectral result reads::

    inst-1  seq=42  lat=3.1ms  roi=5  peaks=7  top@211.4 h=0.812 w=6.3

an error (printed to stderr, so it stands out even when stdout is piped)::

    ERROR inst-1  seq=43  bad_dtype: dtype 'float128' is not one of [...]

and a message that is not valid wire v1 is reported as ``BAD MESSAGE <code>: <reason>``. With
``as_json`` every message is one JSON object per line on stdout (``type`` is ``"result"``,
``"error"`` or ``"invalid"``). Latency is capture-to-receipt: now minus the header's ``t_ns``
(both Unix-epoch clocks; meaningful on one machine or with synchronised clocks).

Runs in the calling thread until ``count`` messages, ``seconds``, or Ctrl-C.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import zmq

from stream.errors import WireError
from stream.paths import path_specs
from stream.wire import ERROR_KIND, Message, decode

__all__ = ["format_message", "number", "run_tap"]

_POLL_MS = 100


def format_message(msg: Message, received_ns: int) -> str:
    """The compact one-line form of a result or error (no trailing newline): a result in its
    path's own words (:attr:`~stream.paths.PathSpec.format_result`), or its keys."""
    latency = _latency_ms(msg, received_ns)
    lat = f"lat={latency:.1f}ms" if latency is not None else "lat=?"
    seq = f"seq={msg.seq}" if msg.seq is not None else "seq=?"
    body = msg.payload if isinstance(msg.payload, dict) else {}
    if msg.kind == ERROR_KIND:
        return f"ERROR {msg.stream}  {seq}  {body.get('code', '?')}: {body.get('reason', '')}"
    line = f"{msg.stream}  {seq}  {lat}  "
    formatter = _result_formatters().get(msg.kind)
    if formatter is not None:
        try:
            return line + formatter(body)
        except Exception:  # a body its path would not write: show its keys instead
            pass
    return line + f"{msg.kind} {{{','.join(sorted(map(str, body)))}}}"


@functools.cache
def _result_formatters() -> dict[str, Callable[[Mapping[str, Any]], str]]:
    return {spec.result_kind: spec.format_result for spec in path_specs()
            if spec.format_result is not None}


def number(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or ``?`` if it is not a real number (results are
    read from the network: a field may hold anything)."""
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:.{digits}f}" if real else "?"


def _latency_ms(msg: Message, received_ns: int) -> float | None:
    t_ns = msg.header.get("t_ns")
    if msg.kind == ERROR_KIND or not isinstance(t_ns, int) or isinstance(t_ns, bool):
        return None
    return (received_ns - t_ns) / 1e6


def _json_line(msg: Message, received_ns: int) -> str:
    kind = "error" if msg.kind == ERROR_KIND else "result"
    record: dict[str, Any] = {
        "type": kind,
        "kind": msg.kind,
        "stream": msg.stream,
        "seq": msg.seq,
        "t_ns": msg.header.get("t_ns"),
        "latency_ms": _latency_ms(msg, received_ns),
        "body": msg.payload,
    }
    return json.dumps(record, default=repr, separators=(",", ":"))


def run_tap(
    *,
    connect: str,
    topic: str = "",
    count: int | None = None,
    seconds: float | None = None,
    as_json: bool = False,
    context: zmq.Context | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Subscribe to ``connect`` (a service's PUB endpoint) with topic prefix ``topic`` and print
    one line per message until ``count`` messages (results, errors and invalid ones alike),
    ``seconds`` seconds, or Ctrl-C. Returns the exit status (0, or 130 on Ctrl-C)."""
    out = out or sys.stdout
    err = err or sys.stderr
    ctx = context or zmq.Context()
    sock = ctx.socket(zmq.SUB)
    seen = 0
    status = 0
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(connect)
        end = None if seconds is None else time.monotonic() + seconds
        while count is None or seen < count:
            wait_ms = _POLL_MS
            if end is not None:
                left_s = end - time.monotonic()
                if left_s <= 0:
                    break
                wait_ms = min(wait_ms, max(1, int(left_s * 1000)))
            if not sock.poll(wait_ms, zmq.POLLIN):
                continue
            frames = sock.recv_multipart(copy=False)
            received_ns = time.time_ns()
            seen += 1
            try:
                msg = decode(frames, topic=True)
            except WireError as exc:
                if as_json:
                    record = {"type": "invalid", "code": exc.code, "reason": exc.reason}
                    print(json.dumps(record), file=out, flush=True)
                else:
                    print(f"BAD MESSAGE {exc.code}: {exc.reason}", file=err, flush=True)
                continue
            if as_json:
                print(_json_line(msg, received_ns), file=out, flush=True)
            elif msg.kind == ERROR_KIND:
                print(format_message(msg, received_ns), file=err, flush=True)
            else:
                print(format_message(msg, received_ns), file=out, flush=True)
    except KeyboardInterrupt:
        status = 130
    finally:
        sock.close(linger=0)
        if context is None:
            ctx.term()
    return status
