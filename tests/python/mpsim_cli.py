"""The mpsim binary the command-line tests run (env MPSIM_BIN, default <repo>/build/mpsim), and
one call of it with its output captured. Shared by the test_*_cli.py files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPSIM = os.environ.get("MPSIM_BIN", str(ROOT / "build" / "mpsim"))


def run_mpsim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`mpsim ARGS...`; fails the test (not an error) when the binary has not been built."""
    if not Path(MPSIM).exists():
        pytest.fail(f"mpsim binary not found at {MPSIM} (build it or set MPSIM_BIN)")
    return subprocess.run([MPSIM, *args], capture_output=True, text=True, timeout=timeout)
