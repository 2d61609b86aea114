"""`mpsim gemm`: results and error statistics through the command line, and bad input.

A hand-computed GEMM from files (including a Q8.13 accumulator that saturates), the JSON report
of a random run, and exit code 2 with a message naming the problem for malformed MAC specs,
shapes and files.  Requires the mpsim binary (env MPSIM_BIN, default <repo>/build/mpsim).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from mpsim_cli import run_mpsim


def run(*args: str) -> subprocess.CompletedProcess:
    return run_mpsim("gemm", *args)


def test_random_run_reports_errors(tmp_path):
    r = run("--mac", "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", "-m", "8", "-n", "8", "-k", "64", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["mac"] == "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq"
    assert (j["m"], j["n"], j["k"]) == (8, 8, 64)
    # A 6-bit accumulator loses about 6 bits (SQNR near 6 dB per bit); an fp32 one about 24.
    assert 15 < j["error"]["sqnr_db"] < 60
    r32 = run("--mac", "in=e5m2:cfg5 acc=fp32", "-m", "8", "-n", "8", "-k", "64", "--json")
    assert json.loads(r32.stdout)["error"]["sqnr_db"] > 120
    # The same seed gives the same report whatever the thread count.
    r1 = run("--mac", "in=e5m2:cfg5 acc=e6m5", "-m", "8", "-n", "8", "-k", "64", "--json", "--threads", "1")
    r2 = run("--mac", "in=e5m2:cfg5 acc=e6m5", "-m", "8", "-n", "8", "-k", "64", "--json", "--threads", "2")
    assert json.loads(r1.stdout)["error"] == json.loads(r2.stdout)["error"]


def test_files_and_saturating_fixed_point_accumulator(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("1 2 3\n4 5 6  # row 2\n")
    b.write_text("100 1\n100 1\n100 1\n")
    # fp32: exact. q8.13 holds up to 128 - 2^-13: 600 and 1500 saturate.
    r = run("--mac", "in=fp32 acc=fp32", "-m", "2", "-n", "2", "-k", "3", "--a", str(a), "--b", str(b), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["error"]["max_abs"] == 0.0
    r = run("--mac", "in=fp32 acc=q8.13", "-m", "2", "-n", "2", "-k", "3", "--a", str(a), "--b", str(b), "--json")
    j = json.loads(r.stdout)
    assert j["error"]["max_abs"] == pytest.approx(1500 - (128 - 2**-13))


def test_block_formats_from_files(tmp_path):
    # HBFP4 blocks of 4 (docs/mac.md section 7.2): A's row [0.3, -0.7, 0.85, 0.05] becomes
    # [2, -6, 7, 0] * 2^-3, B's column of ones [4, 4, 4, 4] * 2^-2: 12 * 2^-5 = 0.375, which is
    # also the fp64 GEMM of the quantized operands, so the error is 0.
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("0.3 -0.7 0.85 0.05\n")
    b.write_text("1\n1\n1\n1\n")
    r = run("--mac", "in=hbfp4/4", "-m", "1", "-n", "1", "-k", "4", "--a", str(a), "--b", str(b), "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["mac"] == "in=hbfp4/4 bacc=auto outer=fp32"
    assert j["vectorized"] is True
    assert j["error"]["max_abs"] == 0.0
    # A 4-bit block accumulator saturates at 7 after the first product: 7 * 2^-5 (error 0.15625).
    r = run("--mac", "in=hbfp4/4 bacc=4", "-m", "1", "-n", "1", "-k", "4", "--a", str(a), "--b", str(b), "--json")
    j = json.loads(r.stdout)
    assert j["vectorized"] is False
    assert j["error"]["max_abs"] == pytest.approx(0.375 - 7 / 32)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--mac", "in=e5m2 acc=foo"), "acc=foo"),
        (("--mac", "in=e5m2 order=chunk0"), "chunk0"),
        (("--mac", "in=e5m2 colour=red"), "colour"),
        (("--mac", "a=hbfp4/64 b=e5m2"), "both operands in block formats"),
        (("--mac", "in=hbfp4/64 acc=fp16"), "acc=fp16"),
        (("--mac", "in=mxfp4 bacc=200"), "bacc=200"),
        (("--mac", "in=e5m2", "-k", "0"), "positive"),
        (("--mac", "in=e5m2", "--op", "tt"), "--op"),
        (("--mac", "in=e5m2", "--a", "x.txt"), "both --a and --b"),
    ],
)
def test_bad_input_exits_2(args, message):
    r = run(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr


def test_wrong_file_size_exits_2(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("1 2 3\n")
    r = run("--mac", "in=fp32", "-m", "2", "-n", "2", "-k", "3", "--a", str(a), "--b", str(a))
    assert r.returncode == 2 and "holds 3 numbers" in r.stderr, r.stderr
    r = run("--mac", "in=fp32", "-m", "1", "-n", "1", "-k", "3", "--a", str(tmp_path / "missing"), "--b", str(a))
    assert r.returncode == 1 and "cannot open" in r.stderr, r.stderr


def test_bench_gemm_reports_every_shape_and_spec():
    r = run_mpsim("bench", "gemm", "--batch", "1", "--reps", "1", "--threads", "1", "--json",
                  "--mac", "in=e5m2:cfg5 acc=e6m5", "--mac", "in=e5m2:cfg5 acc=q8.13", timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["operands"] == "fp32"
    rows = json.loads(r.stdout)["results"]
    assert {row["k"] for row in rows} == {144, 288, 576}
    for k in (144, 288, 576):
        names = [row["gemm"] for row in rows if row["k"] == k]
        assert names == ["openblas sgemm", "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq",
                         "in=e5m2:cfg5 prod=exact acc=q8.13 order=seq"]
    emulated = [row for row in rows if row["gemm"] != "openblas sgemm"]
    assert all(row["gmac_per_s"] > 0 and row["sgemm_ratio"] > 0 for row in emulated)
    assert all(row["vectorized"] for row in emulated)
    bad = run_mpsim("bench", "gemm", "--batch", "0", timeout=60)
    assert bad.returncode == 2 and "--batch" in bad.stderr
    # The fp64 overload on request; other operand types are usage errors.
    r = run_mpsim("bench", "gemm", "--batch", "1", "--reps", "1", "--threads", "1", "--json",
                  "--operands", "fp64", "--mac", "in=e5m2:cfg5 acc=e6m5", timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["operands"] == "fp64" and all(row["gmac_per_s"] > 0 for row in out["results"])
    bad = run_mpsim("bench", "gemm", "--operands", "bf16", timeout=60)
    assert bad.returncode == 2 and "--operands" in bad.stderr
