"""`mpsim bench train`: which steps it times (--modes), its JSON rows, and bad --modes.

The timings themselves are not asserted (speed is reported by benchmarks, never tested); the
rows must be there, finite and positive, with the FP32 ratio only where FP32 ran.
Requires the mpsim binary (env MPSIM_BIN, default <repo>/build/mpsim).
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from mpsim_cli import run_mpsim


def bench(*args: str) -> subprocess.CompletedProcess:
    return run_mpsim("bench", "train", "--models", "lenet5", "--batch", "8", "--threads", "1", "--reps", "1", *args)


@pytest.mark.parametrize("modes, precisions", [
    ("fp32", ["fp32 (OpenBLAS)"]),
    ("emulated", ["in=e5m2:cfg5 prod=exact acc=e6m5 order=seq"]),
    ("fp32,emulated", ["fp32 (OpenBLAS)", "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq"]),
])
def test_modes_pick_the_steps_that_are_timed(modes, precisions):
    r = bench("--modes", modes, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["precision"] for row in rows] == precisions
    for row in rows:
        assert row["model"] == "lenet5" and row["threads"] == 1
        assert math.isfinite(row["seconds_per_batch"]) and row["seconds_per_batch"] > 0
    # The ratio to FP32 exists only where FP32 was measured in the same run.
    ratios = [row["slowdown_vs_fp32"] for row in rows]
    if "fp32" in modes.split(","):
        assert ratios[0] == 1.0 and all(x is not None and x > 0 for x in ratios)
    else:
        assert ratios == [None]


def test_text_output_without_fp32_prints_no_ratio():
    r = bench("--modes", "emulated")
    assert r.returncode == 0, r.stderr
    row = [line for line in r.stdout.splitlines() if line.startswith("lenet5")]
    assert len(row) == 1 and " - " in row[0]


@pytest.mark.parametrize("modes", ["fp16", "fp32,bogus"])
def test_unknown_modes_are_usage_errors(modes):
    r = bench("--modes", modes)
    assert r.returncode == 2
    assert "--modes" in r.stderr and "unknown mode" in r.stderr
