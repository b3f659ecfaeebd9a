"""``python -m engines.ct.evaluate [--json PATH] [--quick]``: the CT evaluation report."""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.ct.evaluate.run import evaluate_ct


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engines.ct.evaluate",
                                     description="Evaluate the CT denoisers (print a table, "
                                                 "write the JSON report).")
    parser.add_argument("--json", type=Path, default=None, help="where to write the report")
    parser.add_argument("--quick", action="store_true",
                        help="2 test phantoms at 256², the 128² real slice (minutes)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    evaluate_ct(args.json, args.quick, threads=args.threads)


if __name__ == "__main__":
    main()
