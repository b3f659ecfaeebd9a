"""Files a person can hold in their head: no source file above 600 lines."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream", "engines", "devices", "tests", "bench")
MAX_LINES = 600


def test_no_source_file_is_longer_than_600_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for package in PACKAGES
            for path in (ROOT / package).rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"
