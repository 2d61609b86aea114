"""The block-format CLI: `mpsim format` and `mpsim quantize` with hbfp/mx/nvfp4 strings.

Checks the issue's hand-computed vectors through the command line (text and --json), the
--shape/--axis layouts, and that impossible combinations exit with code 2 and a message naming
the problem.  Requires the mpsim binary (env MPSIM_BIN, default <repo>/build/mpsim).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from mpsim_cli import run_mpsim


def run(*args: str) -> subprocess.CompletedProcess:
    return run_mpsim(*args, timeout=60)


def quantize_json(fmt: str, *values: str, extra: tuple[str, ...] = ()) -> dict:
    r = run("quantize", fmt, "--json", *extra, "--", *values)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize(
    "fmt, values, want",
    [
        ("hbfp4/16", ("0.3", "-0.7", "0.85", "0.05"), [0.25, -0.75, 0.875, 0.0]),
        ("hbfp6/16", ("0.3", "-0.7", "0.85", "0.05"), [0.3125, -0.6875, 0.84375, 0.0625]),
        ("hbfp8/16", ("0.3", "-0.7", "0.85", "0.05"), [0.296875, -0.703125, 0.8515625, 0.046875]),
        ("mxfp8_e4m3", ("1.9", "0.1", "-0.33", "0"), [1.75, 0.1015625, -0.34375, 0.0]),
        ("mxfp4", ("1.9", "0.1", "-0.33", "0"), [1.5, 0.125, -0.375, 0.0]),
    ],
)
def test_hand_vectors(fmt, values, want):
    j = quantize_json(fmt, *values)
    assert [v["result"] for v in j["values"]] == want
    assert j["stats"]["blocks"] == 1
    # The same through the fp32 carrier.
    j32 = quantize_json(fmt, *values, extra=("--carrier", "fp32"))
    assert [v["result"] for v in j32["values"]] == want


def test_scales_and_flags():
    j = quantize_json("mxfp8_e4m3", "1.9", "0.1", "-0.33", "0")
    assert j["blocks"] == [{"exponent": -8, "code": 119, "scale": 2.0**-8, "nan": False}]
    assert [v["flag"] for v in j["values"]] == ["clipped", "inexact", "inexact", "exact"]
    assert j["stats"]["clipped"] == 1
    j = quantize_json("hbfp4/2", "1", "nan", "0.5", "0.25")
    assert j["blocks"][0]["nan"] and j["blocks"][0]["code"] == 1023
    assert [v["result"] for v in j["values"]][2:] == [0.5, 0.25]
    assert j["stats"]["nan_blocks"] == 1


def test_layouts():
    # Blocks of 2 along axis 0 of a 2 x 3 matrix: columns are blocks.
    j = quantize_json("hbfp4/2", "1", "100", "0.1", "0.5", "0.25", "0.1", extra=("--shape", "2,3", "--axis", "0"))
    assert [v["block"] for v in j["values"]] == [0, 1, 2, 0, 1, 2]
    assert [b["exponent"] for b in j["blocks"]] == [1, 7, -3]
    # 2 x 2 tiles over a 2 x 3 matrix: two tiles.
    j = quantize_json("hbfp4/4:tile", "1", "2", "3", "4", "5", "6", extra=("--shape", "2,3"))
    assert [v["block"] for v in j["values"]] == [0, 0, 1, 0, 0, 1]


def test_format_description():
    r = run("format", "hbfp6/64", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["bits_per_element"] == 6 + 10 / 64
    assert j["grid"] == [k / 32 for k in range(32)]
    assert j["scale_min"] == -511 and j["scale_max"] == 511 and j["rule"] == "max"
    r = run("format", "nvfp4")
    assert r.returncode == 0 and "e4m3fn" in r.stdout and "4.5" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("format", "hbfp4/0"), "block size 0"),
        (("format", "hbfp4/12:tile"), "not a square"),
        (("format", "mxfp4:tile"), "not a square"),
        (("format", "hbfp4/16:exp=12"), "1..10 bits"),
        (("format", "hbfp60/16"), "2..54 bits"),
        (("quantize", "hbfp30/16", "--carrier", "fp32", "0.5"), "wider than the fp32 carrier"),
        (("quantize", "hbfp4/4", "1", "2", "3", "--shape", "2,2"), "holds 4 values"),
        (("quantize", "hbfp4/4", "1", "2", "--axis", "2"), "out of range"),
        (("quantize", "hbfp4/4:tile", "1", "2", "3", "4"), "at least 2 dimensions"),
        (("quantize", "e4m3fn", "1", "--axis", "0"), "block formats only"),
    ],
)
def test_bad_input_exits_2(args, message):
    r = run(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
