"""`mpsim bench quantize`: its rows (one per format and mode, with the copy baseline and the
ratio), the forced SIMD level, and bad arguments.

The timings themselves are not asserted (speed is reported by the benchmark, never tested); the
rows must be there, finite and positive, and each ratio must be its time over the copy's.
Requires the mpsim binary (env MPSIM_BIN, default <repo>/build/mpsim).
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from mpsim_cli import run_mpsim


def run(*args: str) -> subprocess.CompletedProcess:
    return run_mpsim("bench", "quantize", *args)


def bench(*args: str) -> subprocess.CompletedProcess:
    """A short run: a small array, three repetitions."""
    return run("--n", "2048", "--reps", "3", *args)


def test_default_formats_and_modes_each_get_a_row_beside_the_copy():
    r = bench("--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["benchmark"] == "quantize" and doc["threads"] == 1 and doc["elements"] == 2048
    names = [row["format"] for row in doc["results"]]
    assert names == ["e4m3fn", "e4m3fn@sr", "e5m2", "e5m2@sr", "fp16", "fp16@sr", "bf16", "bf16@sr"]
    copy = doc["copy_ns_per_element"]
    assert math.isfinite(copy) and copy > 0
    # sr was timed, so the generator's own share is reported too.
    assert math.isfinite(doc["random_word_ns"]) and doc["random_word_ns"] > 0
    for row in doc["results"]:
        ns = row["ns_per_element"]
        assert math.isfinite(ns) and ns > 0, row
        assert row["copy_ns_per_element"] == copy
        assert row["ratio_to_copy"] == pytest.approx(ns / copy, rel=1e-12)
        assert row["vectorized"] is True, row  # these four formats have SIMD kernels in both modes


def test_forced_scalar_level_is_reported_and_block_formats_are_timed():
    r = bench("--json", "--level", "scalar", "--formats", "e5m2", "mxfp8_e4m3", "--modes", "rz")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["simd_level"] == "scalar"
    assert [row["format"] for row in doc["results"]] == ["e5m2@rz", "mxfp8_e4m3@rz"]
    assert "random_word_ns" not in doc or doc["random_word_ns"] == 0  # no stochastic mode timed


def test_table_names_the_copy_column():
    r = bench("--formats", "fp16", "--modes", "rne")
    assert r.returncode == 0, r.stderr
    assert "copy ns/elem" in r.stdout and "fp16" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--level", "avx9"), "--level must be scalar, avx2 or avx512"),
    (("--formats", "e9m9x"), "e9m9x"),
    (("--modes", "round-up"), "round-up"),
    (("--n", "0"), "--n must be positive"),
    (("--reps", "0"), "--reps must be at least 1"),
])
def test_bad_arguments_exit_2_naming_the_problem(args, message):
    r = run("--formats", "e5m2", "--modes", "rne", *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr
