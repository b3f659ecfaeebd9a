"""The tap prints one line per result, errors distinctly, and JSON lines on request."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from service_client import TIMEOUT_S

from stream.tap import format_message, run_tap
from stream.wire import encode, error_message, result_message

BODY = {
    "roi": [[10, 20], [40, 52]],
    "peaks": [
        {"index": 14.6, "height": 0.5, "area": 3.0, "width": 4.2, "start": 10, "end": 20},
        {"index": 45.25, "height": 0.9, "area": 6.0, "width": 5.5, "start": 40, "end": 52},
    ],
}


def _result(stream: str, seq: int, t_ns: int):
    return result_message("spectral", {"stream": stream, "seq": seq, "t_ns": t_ns}, BODY)


def test_format_result_and_error() -> None:
    now = time.time_ns()
    line = format_message(_result("inst-1", 42, now - 3_000_000), now)
    assert line == "inst-1  seq=42  lat=3.0ms  roi=2  peaks=2  top@45.2 h=0.900 w=5.5"
    err = format_message(error_message("bad_dtype", "no", stream="inst-1", seq=7), now)
    assert err == "ERROR inst-1  seq=7  bad_dtype: no"
    empty = result_message("spectral", {"stream": "s", "seq": 0, "t_ns": now}, {"roi": [],
                                                                                 "peaks": []})
    assert format_message(empty, now).endswith("roi=0  peaks=0")


def _tap_in_thread(**kwargs) -> tuple[threading.Thread, dict]:
    done: dict = {}

    def target() -> None:
        done["status"] = run_tap(**kwargs)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, done


@pytest.mark.parametrize("as_json", [False, True])
def test_tap_prints_results_errors_and_invalid(xpub, as_json: bool) -> None:
    sock, endpoint = xpub  # XPUB: it tells when the tap's subscription has arrived
    out, err = io.StringIO(), io.StringIO()
    thread, done = _tap_in_thread(connect=endpoint, topic="", count=4, seconds=TIMEOUT_S,
                                  as_json=as_json, out=out, err=err)
    assert sock.poll(int(TIMEOUT_S * 1000)), "the tap never subscribed"
    assert sock.recv() == b"\x01"  # subscribe to everything
    now = time.time_ns()
    sock.send_multipart(encode(_result("inst-1", 0, now), topic=True))
    sock.send_multipart(encode(error_message("empty", "0 samples", stream="inst-2", seq=5),
                               topic=True))
    sock.send_multipart([b"result.spectral/x", b"\xc1", b""])  # not wire v1
    sock.send_multipart(encode(_result("inst-1", 1, now), topic=True))
    thread.join(TIMEOUT_S)
    assert not thread.is_alive() and done["status"] == 0
    if as_json:
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [r["type"] for r in records] == ["result", "error", "invalid", "result"]
        assert records[0]["body"] == BODY and records[0]["seq"] == 0
        assert records[0]["latency_ms"] >= 0
        assert records[1]["body"]["code"] == "empty" and records[1]["stream"] == "inst-2"
        assert records[2]["code"] == "bad_msgpack"
        assert err.getvalue() == ""
    else:
        lines = out.getvalue().splitlines()
        assert [line.split()[:2] for line in lines] == [["inst-1", "seq=0"], ["inst-1", "seq=1"]]
        errors = err.getvalue().splitlines()
        assert errors[0] == "ERROR inst-2  seq=5  empty: 0 samples"
        assert errors[1].startswith("BAD MESSAGE bad_msgpack:")


def test_tap_topic_filter(xpub) -> None:
    sock, endpoint = xpub
    out = io.StringIO()
    # count=1: were the filter to let inst-1 through, the tap would print it and end.
    thread, done = _tap_in_thread(connect=endpoint, topic="result.spectral/inst-2", count=1,
                                  seconds=TIMEOUT_S, out=out, err=io.StringIO())
    assert sock.poll(int(TIMEOUT_S * 1000)), "the tap never subscribed"
    assert sock.recv() == b"\x01result.spectral/inst-2"
    now = time.time_ns()
    for stream in ("inst-1", "inst-2", "inst-3"):
        sock.send_multipart(encode(_result(stream, 0, now), topic=True))
    thread.join(TIMEOUT_S)
    assert not thread.is_alive() and done["status"] == 0
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["inst-2"]


def test_tap_ends_after_seconds(xpub) -> None:
    _, endpoint = xpub
    out = io.StringIO()
    start = time.monotonic()
    thread, done = _tap_in_thread(connect=endpoint, topic="", seconds=0.5, out=out,
                                  err=io.StringIO())
    thread.join(TIMEOUT_S)
    assert not thread.is_alive() and done["status"] == 0
    assert time.monotonic() - start >= 0.5 and out.getvalue() == ""
