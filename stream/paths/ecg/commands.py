"""The ECG path's command line: its service settings (``run ecg --templates ...``), ``source
ecg-sim|ecg-replay``, ``ecg enroll|explain|users|remove``, ``train|eval ecg``, and its results
as ``sigstream tap`` prints them."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.cli_options import (
    client_security,
    eval_options,
    push_link,
    security_options,
    source_options,
    train_options,
)
from stream.errors import ConfigError, SecurityError
from stream.paths.spec import CliGroups, Environment

__all__ = ["ECG_MODELS", "EcgSettings", "add_commands", "format_result"]

# Keys of engines.ecg.specs.ECG_SPECS (a test pins them to the specs).
ECG_MODELS = ("cnn", "embedding")
_TEMPLATES_FILE = "ecg_users.sqlite"


@dataclass(frozen=True, kw_only=True)
class EcgSettings:
    """The ECG service's own settings: ``templates``, the SQLite store of enrolled users
    (created if missing); ``templates_key``, the key file its templates are encrypted with;
    ``fuse_beats``, beats in the fused decision (calibrated: 1, 3, 5, 10)."""

    templates: Path
    templates_key: Path | None = None
    fuse_beats: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.fuse_beats, int) or isinstance(self.fuse_beats, bool) or (
                self.fuse_beats < 1):
            raise ConfigError(f"fuse_beats must be a positive integer, got {self.fuse_beats!r}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--templates", type=Path, default=None,
                            help=f"SQLite store of enrolled users (default $SIGSTREAM_DATA/"
                                 f"{_TEMPLATES_FILE})")
        parser.add_argument("--fuse-beats", type=int, default=5,
                            help="beats in the fused decision (calibrated: 1, 3, 5, 10)")
        parser.add_argument("--templates-key", type=Path, default=None,
                            help="key file the templates are encrypted with "
                                 "(`sigstream keys templates-key`)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Environment) -> EcgSettings:
        return cls(templates=args.templates or env.data_dir / _TEMPLATES_FILE,
                   templates_key=_templates_key(args), fuse_beats=args.fuse_beats)


def _templates_key(args: argparse.Namespace) -> Path | None:
    """``--templates-key``, checked before anything starts (one line and exit 2 if unusable)."""
    from engines.ecg.templates import TemplateStoreError, read_templates_key

    if args.templates_key is None:
        return None
    try:
        read_templates_key(args.templates_key)
    except TemplateStoreError as exc:
        raise SecurityError(str(exc)) from None
    return Path(args.templates_key)


def add_commands(groups: CliGroups) -> None:
    _source_commands(groups.source)
    _user_commands(groups.top)
    key = groups.keys.add_parser("templates-key",
                                 help="a key that encrypts the ECG templates at rest")
    key.add_argument("--out", type=Path, required=True, help="the key file to write")
    key.set_defaults(func=_new_templates_key)
    train = groups.train.add_parser("ecg", help="the ECG beat models")
    train.add_argument("--model", required=True, choices=ECG_MODELS)
    train_options(train)
    train.set_defaults(func=_train)
    evaluate = groups.eval.add_parser("ecg", help="R-peaks, identification and verification")
    evaluate.add_argument("--quick", action="store_true", help="a small, fast run")
    evaluate.add_argument("--data-dir", type=Path, default=Path(".data/ecg"),
                          help="the real recordings (make ecg-data)")
    eval_options(evaluate)
    evaluate.set_defaults(func=_evaluate)


def _source_commands(source: Any) -> None:
    sim = source.add_parser("ecg-sim", help="simulated ECG wearables (ECGSYN-style)")
    sim.add_argument("--stream", default="wearable", help="stream id (prefix if --streams>1)")
    sim.add_argument("--streams", type=int, default=1, help="simulated wearables")
    sim.add_argument("--fs", type=float, default=250.0, help="samples per second")
    sim.add_argument("--chunk-ms", type=float, default=250.0, help="samples per message, ms")
    sim.add_argument("--subject", type=int, default=0,
                     help="cohort subject of the first wearable (the next ones follow)")
    sim.add_argument("--session", type=int, default=1, help="recording session")
    sim.add_argument("--snr-db", type=float, default=None, help="override the noise level")
    sim.add_argument("--seed", type=int, default=0, help="cohort seed")
    sim.set_defaults(func=_ecg_sim)
    replay = source.add_parser("ecg-replay", help="replay an ECG file (CSV/NPY/WFDB) at its rate")
    replay.add_argument("file", type=Path)
    replay.add_argument("--fs", type=float, default=None,
                        help="sample rate of a CSV/NPY file (WFDB has its own)")
    replay.add_argument("--column", default=None, help="CSV column (name or index)")
    replay.add_argument("--stream", default=None, help="stream id (default: the file name)")
    replay.add_argument("--chunk-ms", type=float, default=250.0)
    replay.add_argument("--loop", action="store_true", help="start again at the end")
    replay.set_defaults(func=_ecg_replay)
    for parser in (sim, replay):
        parser.add_argument("--claim", default=None, help="header claim: the user to verify")
        parser.add_argument("--explain", action="store_true",
                            help="ask for a Grad-CAM heatmap with every beat")
        parser.add_argument("--embed", action="store_true",
                            help="ask for each beat's embedding (live enrolment)")
        source_options(parser)


def _header(args: argparse.Namespace) -> dict[str, object]:
    header: dict[str, object] = {}
    if args.claim:
        header["claim"] = args.claim
    if args.explain:
        header["explain"] = True
    if args.embed:
        header["embed"] = True
    return header


def _ecg_sim(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.ecg.sources import run_ecg_sim

    with push_link(args) as link:
        return run_ecg_sim(stream=args.stream, streams=args.streams, fs_hz=args.fs,
                           chunk_ms=args.chunk_ms, subject=args.subject, session=args.session,
                           snr_db=args.snr_db, seed=args.seed, header=_header(args), **link)


def _ecg_replay(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.ecg.sources import run_ecg_replay

    with push_link(args) as link:
        return run_ecg_replay(args.file, stream=args.stream, fs_hz=args.fs, column=args.column,
                              chunk_ms=args.chunk_ms, loop=args.loop, header=_header(args),
                              **link)


def _user_commands(top: Any) -> None:
    """``ecg enroll|explain|users|remove``."""
    ecg = top.add_parser("ecg", help="ECG users: enrol, list, remove, explain")
    ecg.add_argument("--db", type=Path, default=None,
                     help=f"template store (default $SIGSTREAM_DATA/{_TEMPLATES_FILE})")
    ecg.add_argument("--templates-key", type=Path, default=None,
                     help="key file the templates are encrypted with")
    ecg_sub = ecg.add_subparsers(dest="action", required=True)
    enroll = ecg_sub.add_parser("enroll", help="enrol a user from a recording or a live stream")
    enroll.add_argument("--user", required=True)
    enroll.add_argument("--beats", type=int, default=None,
                        help="beats to enrol from (file: all good ones; live: 20)")
    explain = ecg_sub.add_parser("explain", help="Grad-CAM heatmaps of beats, as PNG files")
    explain.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    explain.add_argument("--user", default=None,
                         help="explain the match against this user (default: the best match)")
    explain.add_argument("--beats", type=int, default=5, help="beats to explain")
    for cmd in (enroll, explain):
        cmd.add_argument("--file", type=Path, default=None, help="a CSV / NPY / WFDB recording")
        cmd.add_argument("--fs", type=float, default=None, help="sample rate of a CSV/NPY file")
        cmd.add_argument("--column", default=None, help="CSV column (name or index)")
        cmd.add_argument("--stream", default=None, help="live: the wearable's stream id")
        cmd.add_argument("--results", default="tcp://127.0.0.1:5556",
                         help="live: the service's results endpoint")
        cmd.add_argument("--timeout", type=float, default=60.0, help="live: give up after S s")
        cmd.add_argument("--max-file-mb", type=float, default=128.0,
                         help="file: refuse a recording larger than this (MiB)")
        security_options(cmd, server=False)
    enroll.add_argument("--device-key", default=None,
                        help="live, with --keys: the enrolling wearable's public key (.key file "
                             "or z85); only its beats are enrolled")
    enroll.add_argument("--insecure", action="store_true",
                        help="live without --keys: enrol whatever arrives on --stream, from "
                             "anyone who can send to the service")
    users = ecg_sub.add_parser("users", help="list enrolled users")
    users.add_argument("--json", action="store_true")
    remove = ecg_sub.add_parser("remove", help="delete a user's templates")
    remove.add_argument("--user", required=True)
    ecg.set_defaults(func=_ecg_command)


def _ecg_command(args: argparse.Namespace, env: Environment) -> int:
    from stream.paths.ecg.tools import run_ecg_command
    from stream.security import read_public_key

    live = getattr(args, "stream", None) is not None
    device_key = getattr(args, "device_key", None)
    return run_ecg_command(
        args, db=args.db or env.data_dir / _TEMPLATES_FILE, templates_key=_templates_key(args),
        security=client_security(args) if live else None,
        device_key=None if device_key is None else read_public_key(device_key).decode(),
    )


def _new_templates_key(args: argparse.Namespace, env: Environment) -> int:
    from engines.ecg.templates import TemplateStoreError, create_templates_key

    try:
        path = create_templates_key(args.out)
    except TemplateStoreError as exc:
        raise SecurityError(str(exc)) from None
    print(f"templates key {path} (mode 0600; back it up apart from the template store: "
          "without it the templates cannot be read)")
    return 0


def _train(args: argparse.Namespace, env: Environment) -> int:
    from engines.ecg.train import train_ecg

    train_ecg(model=args.model, seed=args.seed, out_dir=args.out)
    return 0


def _evaluate(args: argparse.Namespace, env: Environment) -> int:
    from engines.ecg.evaluate import ecg_report, format_table
    from engines.report import publish_report

    report = ecg_report(quick=args.quick, data_dir=args.data_dir)
    publish_report(report, format_table(report), args.json, tag="eval ecg")
    return 0


def format_result(body: Mapping[str, Any]) -> str:
    """``beat 42 hr=72 alice 0.912 accept | fused(5) alice 0.951 accept`` or a status."""
    from stream.tap import number

    if body.get("type") == "status":
        return f"status {body.get('status')}: {body.get('detail', '')}"

    def decision(d: Mapping[str, Any]) -> str:
        text = f"{d.get('identity') or '-'} {number(d.get('score'))} {d.get('decision')}"
        if d.get("reason"):
            text += f" ({d['reason']})"
        if "verified" in d:
            text += f" claim {d.get('claim')}={d.get('verified')}"
        return text

    line = f"beat {body.get('beat')} hr={number(body.get('hr_bpm'), 0)} {decision(body)}"
    fused = body.get("fused")
    if isinstance(fused, dict):
        line += f" | fused({fused.get('beats')}) {decision(fused)}"
    return line
