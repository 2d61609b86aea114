"""Value-by-value cross-check of mpsim's named float presets against ml_dtypes and gfloat.

What is compared
  * Code tables: every code of every preset (`mpsim format P --table --json`) against the
    ml_dtypes dtype (bits reinterpreted) and gfloat's decode_float: value, sign of zero, NaN-ness,
    and (gfloat) the code class.
  * Rounding: `mpsim quantize P[:sat]@MODE --file F --json` against
      - ml_dtypes `np.array(x).astype(dtype)` for RNE (ml_dtypes has no other mode), and
      - gfloat `round_ndarray` (bulk) and `round_float` (the scalar reference, on a smaller
        sample) for rne/rna/rz/ru/rd, each with sat=False and with sat=True (mpsim's `:sat`).
    Inputs (RNE sample): every finite value of the format, every midpoint between neighbours (the
    ties), the midpoints +- one fp32 ulp, the values +- one fp32 ulp (16-bit formats: 2048 of
    them), the largest finite value, the overflow tie (max + half an ulp) and the next value above
    max, each +- one fp32 ulp, fp32 subnormals, +-0, +-inf, NaN and 20000 random fp32 bit patterns
    (half uniform over all 2^32 patterns, half with an exponent inside the format's range); every
    structured input with both signs.  The other modes use the same construction with the first
    6000 random patterns (16-bit formats: around 2048 values only), the saturating runs and
    round_float a smaller one (edges, specials, subnormals, 36 values and their ties, 1000
    random).  All of these are exact in fp32, so every library sees the same number.  NaN results
    are compared as NaN (mpsim writes the positive NaN code whatever the sign; ml_dtypes keeps the
    sign); every other result is also compared by code with ml_dtypes.
    A second sample of float64 inputs that fp32
    cannot hold (midpoints +- a few fp64 ulps, fp64 subnormals, 1e300, ...) checks the single
    rounding from the fp64 carrier against gfloat (which rounds float64 exactly) and documents
    that ml_dtypes converts float64 through float32 (double rounding) for all its dtypes; numpy's
    float16 converts directly.
  * gfloat has no descriptor for e4m3 (IEEE-style, with inf), e4m3fnuz and e5m2fnuz; they are
    built here from gfloat.FormatInfo and validated by the code-table test (they must decode to the
    same table as mpsim and ml_dtypes) before they serve as rounding oracles.

Known differences
  Where a library differs from mpsim on purpose (mpsim follows docs/formats.md / DESIGN.md) or
  because of a library bug, the difference is listed in KNOWN_DIFFERENCES below: each entry names
  the library, presets, modes and the exact set of inputs it covers, and states what mpsim
  returns there and what the library returns there.  Both statements are asserted, and each entry
  must still be exercised by the main sample, so an entry can neither hide other mismatches nor go
  stale silently.  Everything outside the entries must match exactly.  docs/crosscheck.md lists
  them with examples.

Requirements: the mpsim binary (env MPSIM_BIN, default <repo>/build/mpsim) and numpy, ml_dtypes,
gfloat (scripts/requirements-test.txt).  If any is missing every test FAILS (CI installs them).
"""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
from mpsim_jobs import QuantizeJobs

try:
    import numpy as np
    import ml_dtypes
    import gfloat
    import gfloat.formats
    from gfloat import Domain, FormatInfo, RoundMode
except ImportError as exc:  # reported by the autouse fixture below as a failure, not a skip
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

REPO = Path(__file__).resolve().parents[2]
MPSIM_BIN = Path(os.environ.get("MPSIM_BIN", str(REPO / "build" / "mpsim")))

SEED = 20240617
N_RANDOM = 20000  # random fp32 bit patterns in the main (RNE) sample
N_RANDOM_MODES = 6000  # ... of which the first N go into the directed / ties-away samples
N_RANDOM_SMALL = 1000  # ... and into the small sample (saturation runs and gfloat.round_float)
N_STRUCT_SUBSET = 2048  # 16-bit formats: positions whose neighbourhood enters the mode samples

MODES = ("rne", "rna", "rz", "ru", "rd")


@dataclass(frozen=True)
class Preset:
    name: str
    ml: str  # ml_dtypes attribute ("float16" means numpy.float16)
    gfloat: str | None  # attribute of gfloat.formats, or None: descriptor built in _gfloat_fi


PRESETS = {
    p.name: p
    for p in (
        Preset("e5m2", "float8_e5m2", "format_info_ocp_e5m2"),
        Preset("e4m3", "float8_e4m3", None),
        Preset("e4m3fn", "float8_e4m3fn", "format_info_ocp_e4m3"),
        Preset("e4m3fnuz", "float8_e4m3fnuz", None),
        Preset("e5m2fnuz", "float8_e5m2fnuz", None),
        Preset("e3m2fn", "float6_e3m2fn", "format_info_ocp_e3m2"),
        Preset("e2m3fn", "float6_e2m3fn", "format_info_ocp_e2m3"),
        Preset("e2m1fn", "float4_e2m1fn", "format_info_ocp_e2m1"),
        Preset("e8m0fnu", "float8_e8m0fnu", "format_info_ocp_e8m0"),
        Preset("bf16", "bfloat16", "format_info_bfloat16"),
        Preset("fp16", "float16", "format_info_binary16"),
    )
}
PRESET_NAMES = tuple(PRESETS)


# ------------------------------------------------------------------------------------------
# Requirements: fail loudly, never skip.


@pytest.fixture(autouse=True, scope="module")
def _requirements():
    if _IMPORT_ERROR is not None:
        pytest.fail(
            f"test_crosscheck needs numpy, ml_dtypes and gfloat ({_IMPORT_ERROR}); "
            "install scripts/requirements-test.txt (scripts/setup.sh does) and run pytest "
            "with that environment's python",
            pytrace=False,
        )
    if not (MPSIM_BIN.is_file() and os.access(MPSIM_BIN, os.X_OK)):
        pytest.fail(
            f"mpsim binary not found or not executable: {MPSIM_BIN} "
            "(build it with scripts/setup.sh or point MPSIM_BIN at it)",
            pytrace=False,
        )
    np.seterr(all="ignore")


# ------------------------------------------------------------------------------------------
# Libraries


def _ml_dtype(p: Preset):
    return np.dtype(np.float16 if p.ml == "float16" else getattr(ml_dtypes, p.ml))


def _gfloat_fi(p: Preset) -> "FormatInfo":
    if p.gfloat is not None:
        return getattr(gfloat.formats, p.gfloat)
    # Descriptors gfloat does not ship (checked against mpsim and ml_dtypes by the table test).
    common = dict(k=8, has_subnormals=True, is_signed=True, is_twos_complement=False)
    if p.name == "e4m3":  # IEEE-style: +-inf at S.1111.000, NaN at S.1111.{001..111}
        return FormatInfo(name="e4m3", precision=4, bias=7, has_nz=True,
                          domain=Domain.Extended, num_high_nans=7, **common)
    if p.name == "e4m3fnuz":  # no -0; the only NaN is 0x80
        return FormatInfo(name="e4m3fnuz", precision=4, bias=8, has_nz=False,
                          domain=Domain.Finite, num_high_nans=0, **common)
    if p.name == "e5m2fnuz":
        return FormatInfo(name="e5m2fnuz", precision=3, bias=16, has_nz=False,
                          domain=Domain.Finite, num_high_nans=0, **common)
    raise KeyError(p.name)


_RNDMODE = {
    "rne": "TiesToEven",
    "rna": "TiesToAway",
    "rz": "TowardZero",
    "ru": "TowardPositive",
    "rd": "TowardNegative",
}


def gfloat_ndarray(fi, x, mode: str, sat: bool):
    """gfloat.round_ndarray; where it refuses (overflow into a format with neither inf nor NaN,
    sat=False: it raises for the whole array) the overflowing candidates are rounded one by one
    with round_float and those that raise are returned as NaN with raised=True."""
    rnd = getattr(RoundMode, _RNDMODE[mode])
    raised = np.zeros(len(x), bool)
    try:
        return gfloat.round_ndarray(fi, x.copy(), rnd, sat), raised
    except ValueError:
        pass
    cand = np.abs(x) > fi.max  # NaN compares False; only these can overflow
    out = np.empty_like(x)
    out[~cand] = gfloat.round_ndarray(fi, x[~cand].copy(), rnd, sat)
    for i in np.flatnonzero(cand):
        try:
            out[i] = gfloat.round_float(fi, float(x[i]), rnd, sat)
        except ValueError:
            out[i], raised[i] = np.nan, True
    return out, raised


def gfloat_scalar(fi, x, mode: str, sat: bool):
    """gfloat.round_float element by element; raised=True where it raises ValueError."""
    rnd = getattr(RoundMode, _RNDMODE[mode])
    out = np.empty_like(x)
    raised = np.zeros(len(x), bool)
    for i, v in enumerate(x.tolist()):
        try:
            out[i] = gfloat.round_float(fi, v, rnd, sat)
        except ValueError:
            out[i], raised[i] = np.nan, True
    return out, raised


def ml_convert(p: Preset, x):
    """ml_dtypes conversion of the float64 array x; returns (values as float64, raw codes)."""
    dt = _ml_dtype(p)
    q = np.asarray(x, np.float64).astype(dt)
    codes = q.view(np.uint16 if dt.itemsize == 2 else np.uint8).astype(np.int64)
    return q.astype(np.float64), codes


# ------------------------------------------------------------------------------------------
# mpsim


def _mpsim(*args: str) -> str:
    r = subprocess.run([str(MPSIM_BIN), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"mpsim {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


@lru_cache(maxsize=None)
def mpsim_table(name: str) -> SimpleNamespace:
    info = json.loads(_mpsim("format", name, "--json"))
    codes = json.loads(_mpsim("format", name, "--table", "--json"))["codes"]
    assert [c["code"] for c in codes] == list(range(len(codes)))
    values = np.array([float(c["value"]) for c in codes])
    return SimpleNamespace(
        info=info,
        values=values,
        classes=[c["class"] for c in codes],
        max=float(info["max_finite"]),
        nan_codes=frozenset(info["nan_codes"]),
    )


def _parse_quantize(out: bytes):
    vals = json.loads(out)["values"]
    result = np.array([float(v["result"]) for v in vals])
    code = np.array([-1 if v["code"] == "none" else int(v["code"], 16) for v in vals], np.int64)
    return result, code


class MpsimRunner:
    """Runs the `mpsim quantize` jobs on a small thread pool (mpsim writes its JSON to a file, so
    it never waits for Python). All jobs are submitted, preset by preset in test order, when the
    first result is asked for; mpsim then works while Python compares."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.jobs = QuantizeJobs(MPSIM_BIN, _parse_quantize)
        self.submitted = False

    def _submit_all(self):
        for name in PRESET_NAMES:
            s = samples(name)
            for kind, mode, sat, carrier in _jobs():
                inp = self.workdir / f"{name}-{kind}.txt"
                if not inp.exists():
                    inp.write_text("\n".join(map(float.hex, s[kind].tolist())) + "\n")
                fmt = f"{name}{':sat' if sat else ''}@{mode}"
                self.jobs.submit((name, kind, mode, sat, carrier), fmt, inp, carrier)
        self.submitted = True

    def get(self, name, kind, mode, sat=False, carrier="fp64"):
        if not self.submitted:
            self._submit_all()
        return self.jobs.result((name, kind, mode, sat, carrier))


def _jobs():
    yield "main", "rne", False, "fp64"
    for m in MODES[1:]:
        yield "modes", m, False, "fp64"
    for m in MODES:
        for sat in (False, True):
            yield "small", m, sat, "fp64"
    for m in MODES:
        yield "f64", m, False, "fp64"
    yield "f64", "rne", False, "fp32"


@pytest.fixture(scope="module")
def mpsim(tmp_path_factory):
    runner = MpsimRunner(tmp_path_factory.mktemp("crosscheck"))
    yield runner
    runner.jobs.shutdown()


# ------------------------------------------------------------------------------------------
# Samples


def _f32(a):
    return np.asarray(a, np.float64).astype(np.float32)


def _ulp32_neighbours(a):
    """The fp32 numbers one ulp below and above each element (a must be exact in fp32)."""
    a32 = _f32(a)
    return np.concatenate([np.nextafter(a32, np.float32(0)), np.nextafter(a32, np.float32(np.inf))])


def _random_fp32(rng, n: int, lo_exp: int, hi_exp: int):
    """n random fp32 bit patterns, interleaved: even positions uniform over all 2^32 patterns,
    odd positions with a random sign and mantissa and an exponent in [lo_exp, hi_exp]."""
    uni = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    lo, hi = max(lo_exp, -126), min(hi_exp, 127)
    e = rng.integers(lo + 127, hi + 128, n, dtype=np.uint64)
    inr = ((rng.integers(0, 2, n, dtype=np.uint64) << 31) | (e << 23)
           | rng.integers(0, 2**23, n, dtype=np.uint64)).astype(np.uint32)
    bits = np.where(np.arange(n) % 2 == 0, uni, inr)
    return bits.view(np.float32).astype(np.float64)


@lru_cache(maxsize=None)
def samples(name: str) -> dict:
    """Input samples (float64 arrays) for one preset:
    main  -- the full structured set + N_RANDOM random fp32 patterns (RNE: ml_dtypes and gfloat)
    modes -- structured set (16-bit formats: around N_STRUCT_SUBSET positions) + N_RANDOM_MODES
    small -- specials, edges, fp32 subnormals, a few ties, N_RANDOM_SMALL random (all modes, sat)
    f64   -- float64 inputs that fp32 cannot hold (single rounding from the fp64 carrier)"""
    tab = mpsim_table(name)
    rng = np.random.default_rng(SEED + zlib.crc32(name.encode()))
    fin = tab.values[np.isfinite(tab.values)]
    P = np.unique(np.abs(fin))  # non-negative finite values, ascending (0 included if present)
    mids = (P[:-1] + P[1:]) / 2
    assert np.array_equal(_f32(mids), mids), "midpoints must be exact in fp32"
    mx = P[-1]
    # the next value above max if the exponent range were unbounded
    nxt = 2 * mx if tab.info["mantissa_bits"] == 0 else mx + (mx - P[-2])
    tie = (mx + nxt) / 2
    fmax32 = float(np.finfo(np.float32).max)
    edges = np.array([e for e in (mx, tie, nxt, 2 * nxt, fmax32) if e <= fmax32])
    edges = np.concatenate([edges, _ulp32_neighbours(edges)])
    edges = edges[np.isfinite(edges)]
    sub_bits = np.array([1, 2, 3, 0x200000, 0x3FFFFF, 0x400000, 0x400001, 0x5FFFFF, 0x600000,
                         0x600001, 0x7FFFFF, 0x800000], np.uint32)
    sub_rand = rng.integers(1, 0x800000, 24, dtype=np.uint64).astype(np.uint32)
    tiny = np.concatenate([sub_bits, sub_rand]).view(np.float32).astype(np.float64)
    specials = np.array([0.0, np.inf, np.nan])
    minpos = P[P > 0][0]
    rand = _random_fp32(rng, N_RANDOM, int(np.floor(np.log2(minpos))) - 3,
                        int(np.floor(np.log2(mx))) + 3)

    def both_signs(*parts):
        a = np.concatenate([np.asarray(q, np.float64) for q in parts])
        return np.concatenate([a, -a])

    def struct(idx_p, idx_m):
        return (P[idx_p], _ulp32_neighbours(P[idx_p]), mids[idx_m], _ulp32_neighbours(mids[idx_m]))

    allp, allm = np.arange(len(P)), np.arange(len(mids))
    big = len(P) > 1024
    s = {}
    if big:  # 16-bit: all values, all ties and the ties +- 1 fp32 ulp (values +- ulp: subset)
        sub_p = np.unique(np.concatenate([rng.choice(allp, N_STRUCT_SUBSET, replace=False),
                                          allp[:4], allp[-4:]]))
        s["main"] = np.concatenate([
            both_signs(P, mids, _ulp32_neighbours(mids), _ulp32_neighbours(P[sub_p]), edges,
                       tiny, specials), rand])
    else:
        sub_p = allp
        s["main"] = np.concatenate([both_signs(*struct(allp, allm), edges, tiny, specials), rand])
    sub_m = sub_p[sub_p < len(mids)]
    s["modes"] = np.concatenate([both_signs(*struct(sub_p, sub_m), edges, tiny, specials),
                                 rand[:N_RANDOM_MODES]])
    few_p = np.unique(np.concatenate([rng.choice(allp, min(32, len(P)), replace=False),
                                      allp[:2], allp[-2:]]))
    few_m = few_p[few_p < len(mids)]
    s["small"] = np.concatenate([both_signs(*struct(few_p, few_m), edges, tiny, specials),
                                 rand[:N_RANDOM_SMALL]])
    for k in ("main", "modes", "small"):  # every library must see the same number
        v = s[k][np.isfinite(s[k])]
        assert np.array_equal(_f32(v).astype(np.float64), v), k

    # float64 inputs that fp32 cannot represent
    Pp = P[P > 0]
    fm = mids if len(mids) <= 1024 else rng.choice(mids, 1024, replace=False)
    fp = Pp if len(Pp) <= 1024 else rng.choice(Pp, 1024, replace=False)
    f64 = [fm * (1 + 2.0**-30), fm * (1 - 2.0**-30), np.nextafter(fm, 0), np.nextafter(fm, np.inf),
           fp * (1 + 2.0**-35), fp * (1 - 2.0**-35)]
    f64.append([tie * (1 + 2.0**-40), tie * (1 - 2.0**-40), np.nextafter(tie, np.inf),
                np.nextafter(tie, 0), 1e39, 1e300, 2.0**128, float(np.finfo(np.float64).max)])
    f64.append([5e-324, 3 * 5e-324, 2.0**-1022, 1e-300, 2.0**-150, 2.0**-150 * (1 + 2.0**-30),
                2.0**-149 * (1 - 2.0**-30), 2.0**-127 * (1 + 2.0**-40),
                1.5 * 2.0**-127 * (1 - 2.0**-40), 2.0**-126 * (1 - 2.0**-40)])
    e = rng.integers(int(np.floor(np.log2(minpos))) - 3, int(np.floor(np.log2(mx))) + 2, 1000)
    f64.append(np.ldexp(1 + rng.random(1000), e))  # random 52-bit mantissas
    f64 = np.concatenate([np.asarray(q, np.float64) for q in f64])
    f64 = f64[_f32(f64).astype(np.float64) != f64]
    s["f64"] = np.concatenate([f64, -f64])
    return s


# ------------------------------------------------------------------------------------------
# Known differences


def _same(a, b):
    """Element-wise: both NaN, or equal with the same sign bit (so -0 != +0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (np.isnan(a) & np.isnan(b)) | ((a == b) & (np.signbit(a) == np.signbit(b)))


def _e8m0_tie(x):
    """Positive exact ties 1.5*2^k between two e8m0 values 2^k and 2^(k+1), 2^k >= 2^-127."""
    m, e = np.frexp(np.where(np.isfinite(x), x, 0.0))
    return (x > 0) & (m == 0.75) & (e - 1 >= -127)


def _e8m0_tie_even(x):  # the neighbour whose code (k + 127) is even
    lo = np.ldexp(1.0, np.frexp(x)[1] - 1)
    return np.where((np.log2(lo).astype(np.int64) + 127) % 2 == 0, lo, 2 * lo)


def _e8m0_tie_up(x):  # the neighbour away from zero; NaN (0xFF) beyond 2^127
    up = np.ldexp(1.0, np.frexp(x)[1])
    return np.where(up <= 2.0**127, up, np.nan)


@dataclass(frozen=True)
class Known:
    id: str
    library: str  # "ml_dtypes", "gfloat" (both gfloat paths) or "gfloat.round_float"
    presets: tuple
    modes: tuple
    sats: tuple
    where: Callable  # (x, ctx) -> mask of the inputs the entry covers
    mpsim: Callable  # (x, ctx) -> what mpsim returns there
    library_does: Callable  # (x, lib, ctx) -> mask: the library returns what the entry says
    reason: str

    def applies(self, library, preset, mode, sat):
        libs = ("gfloat", "gfloat.round_float") if self.library == "gfloat" else (self.library,)
        return (library in libs and preset in self.presets and mode in self.modes
                and sat in self.sats)


_NO_NAN_FORMATS = ("e3m2fn", "e2m3fn", "e2m1fn")
_BOTH = (False, True)

KNOWN_DIFFERENCES = (
    Known(
        "ml_dtypes-nan-to-zero", "ml_dtypes", _NO_NAN_FORMATS, ("rne",), (False,),
        where=lambda x, c: np.isnan(x),
        mpsim=lambda x, c: np.full(len(x), np.nan),
        library_does=lambda x, lib, c: lib == 0,
        reason="e3m2fn/e2m3fn/e2m1fn have no NaN code. DESIGN.md: a NaN input stays NaN in the "
               "carrier (and is counted); ml_dtypes converts NaN to a zero (of either sign)."),
    Known(
        "ml_dtypes-e8m0-ties-up", "ml_dtypes", ("e8m0fnu",), ("rne",), (False,),
        where=lambda x, c: _e8m0_tie(x),
        mpsim=lambda x, c: _e8m0_tie_even(x),
        library_does=lambda x, lib, c: _same(lib, _e8m0_tie_up(x)),
        reason="ml_dtypes 0.6.0 rounds every exact e8m0 tie 1.5*2^k up to 2^(k+1) (its "
               "round-to-even bit is the implicit leading 1; jax-ml/ml_dtypes PR #398); mpsim and "
               "gfloat round ties to the even code."),
    Known(
        "ml_dtypes-e8m0-fp32-subnormal", "ml_dtypes", ("e8m0fnu",), ("rne",), (False,),
        where=lambda x, c: (x > 2.0**-127) & (x < 1.5 * 2.0**-127),
        mpsim=lambda x, c: np.full(len(x), 2.0**-127),
        library_does=lambda x, lib, c: lib == 2.0**-126,
        reason="ml_dtypes bug: fp32 subnormal inputs in (2^-127, 1.5*2^-127) are rounded up to "
               "2^-126, though 2^-127 is nearer (the tie is at 1.5*2^-127)."),
    Known(
        "gfloat-e8m0-nonpositive", "gfloat", ("e8m0fnu",), MODES, _BOTH,
        where=lambda x, c: ~np.isnan(x) & ((x == 0) | np.signbit(x)),
        mpsim=lambda x, c: np.full(len(x), np.nan),
        library_does=lambda x, lib, c: (~np.isnan(lib) & (lib <= 0))
        | ((x == -np.inf) & (np.isnan(lib) | (lib == 2.0**127))),
        reason="e8m0fnu is unsigned and has no zero; mpsim maps 0, -0, negative numbers and -inf "
               "to NaN (0xFF). gfloat ignores the sign for unsigned formats and returns 0, a "
               "negative number or -inf, which the format cannot hold (round_float turns -inf "
               "into NaN, or into 2^127 with sat)."),
    Known(
        "gfloat-e8m0-below-min", "gfloat", ("e8m0fnu",), MODES, _BOTH,
        where=lambda x, c: (x > 0) & (x < 2.0**-127),
        mpsim=lambda x, c: np.full(len(x), 2.0**-127),
        library_does=lambda x, lib, c: (lib > 0) & (lib <= 2.0**-127),
        reason="e8m0fnu has no zero; mpsim rounds every positive number below 2^-127 to the "
               "smallest value 2^-127 in all modes. gfloat 0.5.2 returns numbers below 2^-127 "
               "that are not in the format (no underflow handling without subnormals; "
               "graphcore-research/gfloat issue #62)."),
    Known(
        "gfloat-overflow-raises", "gfloat", _NO_NAN_FORMATS, MODES, (False,),
        where=lambda x, c: c.raised & ~np.isnan(x),
        mpsim=lambda x, c: np.copysign(c.max, x),
        library_does=lambda x, lib, c: c.raised & (np.abs(x) > c.max),
        reason="Formats with neither inf nor NaN: DESIGN.md saturates overflow (and +-inf) to "
               "+-max without ':sat'; gfloat raises ValueError unless sat=True (its sat=True "
               "results match). In rz gfloat raises only for +-inf."),
    Known(
        "gfloat.round_float-nan-raises", "gfloat.round_float", _NO_NAN_FORMATS, MODES, _BOTH,
        where=lambda x, c: np.isnan(x),
        mpsim=lambda x, c: np.full(len(x), np.nan),
        library_does=lambda x, lib, c: c.raised,
        reason="Formats without NaN: mpsim keeps a NaN input as NaN in the carrier (DESIGN.md); "
               "gfloat.round_float raises ValueError (round_ndarray passes the NaN through, "
               "which agrees with mpsim)."),
)


def _fmt(v: float) -> str:
    return float(v).hex() if np.isfinite(v) else str(v)


def check(preset, library, mode, sat, x, got, want, *, raised=None, must_exercise=True,
          knowns=KNOWN_DIFFERENCES):
    """Assert mpsim (got) == library (want) on the inputs x, except on the known differences,
    where both sides must do what the entry says."""
    ctx = SimpleNamespace(max=mpsim_table(preset).max,
                          raised=np.zeros(len(x), bool) if raised is None else raised)
    explained = np.zeros(len(x), bool)
    problems = []
    for k in knowns:
        if not k.applies(library, preset, mode, sat):
            continue
        m = k.where(x, ctx)
        if must_exercise and not m.any():
            problems.append(f"known difference {k.id!r} is no longer exercised by the sample")
        if not m.any():
            continue
        idx = np.flatnonzero(m)
        exp_mp = k.mpsim(x[idx], SimpleNamespace(max=ctx.max, raised=ctx.raised[idx]))
        bad = idx[~_same(got[idx], exp_mp)]
        if len(bad):
            problems.append(f"{k.id}: mpsim does not return what the entry says on {len(bad)} "
                            f"inputs, e.g. x={_fmt(x[bad[0]])} mpsim={_fmt(got[bad[0]])}")
        sub = SimpleNamespace(max=ctx.max, raised=ctx.raised[idx])
        bad = idx[~k.library_does(x[idx], want[idx], sub)]
        if len(bad):
            problems.append(f"{k.id}: {library} no longer behaves as documented on {len(bad)} "
                            f"inputs, e.g. x={_fmt(x[bad[0]])} {library}={_fmt(want[bad[0]])}")
        explained |= m
    unexplained_raise = ctx.raised & ~explained
    mism = np.flatnonzero((~_same(got, want) | unexplained_raise) & ~explained)
    if len(mism):
        lines = [f"  x={_fmt(x[i])} ({x[i]!r}): mpsim={_fmt(got[i])} {library}="
                 f"{'ValueError' if ctx.raised[i] else _fmt(want[i])}" for i in mism[:25]]
        problems.append(f"{len(mism)} of {len(x)} inputs differ:\n" + "\n".join(lines))
    assert not problems, f"{preset}@{mode}{' sat' if sat else ''} vs {library}:\n" + "\n".join(
        problems)


# ------------------------------------------------------------------------------------------
# 1. Code tables

_GFLOAT_CLASS = {"zero": "ZERO", "subnormal": "SUBNORMAL", "normal": "NORMAL",
                 "inf": "INFINITE", "nan": "NAN"}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_code_table_vs_ml_dtypes(name):
    p, tab = PRESETS[name], mpsim_table(name)
    dt = _ml_dtype(p)
    n = len(tab.values)
    assert n == 2 ** mpsim_table(name).info["bits"]
    raw = np.arange(n, dtype=np.uint16 if dt.itemsize == 2 else np.uint8).view(dt)
    lib = raw.astype(np.float64)
    bad = np.flatnonzero(~_same(tab.values, lib))
    assert not len(bad), f"{name}: {len(bad)} codes differ, e.g. " + ", ".join(
        f"0x{i:x}: mpsim={tab.values[i]!r} ml_dtypes={lib[i]!r}" for i in bad[:10])
    # class column consistent with the value
    fi = ml_dtypes.finfo(dt) if dt != np.float16 else np.finfo(np.float16)
    smallest_normal = float(fi.smallest_normal)
    for i, (v, c) in enumerate(zip(tab.values, tab.classes)):
        want = ("nan" if np.isnan(v) else "inf" if np.isinf(v) else "zero" if v == 0 else
                "subnormal" if abs(v) < smallest_normal else "normal")
        assert c == want, f"{name} code 0x{i:x} ({v!r}): class {c!r}, expected {want!r}"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_code_table_vs_gfloat(name):
    tab, fi = mpsim_table(name), _gfloat_fi(PRESETS[name])
    assert 2**fi.k == len(tab.values)
    dec = [gfloat.decode_float(fi, i) for i in range(2**fi.k)]
    lib = np.array([d.fval for d in dec], np.float64)
    bad = np.flatnonzero(~_same(tab.values, lib))
    assert not len(bad), f"{name}: {len(bad)} codes differ, e.g. " + ", ".join(
        f"0x{i:x}: mpsim={tab.values[i]!r} gfloat={lib[i]!r}" for i in bad[:10])
    for i, (c, d) in enumerate(zip(tab.classes, dec)):
        assert _GFLOAT_CLASS[c] == d.fclass.name, f"{name} code 0x{i:x}: {c} vs {d.fclass}"
    assert tab.max == fi.max


# ------------------------------------------------------------------------------------------
# 2. Rounding


def _check_codes(name, got, code, want=None, want_codes=None):
    """mpsim's code column must decode (by mpsim's table) to its result; NaN results carry a NaN
    code (none for formats without NaN); where the library (want, want_codes) returns the same
    non-NaN value, the codes must be equal too."""
    tab = mpsim_table(name)
    isnan = np.isnan(got)
    assert np.all(code[~isnan] >= 0), "finite result without a code"
    assert np.all(_same(tab.values[code[~isnan]], got[~isnan])), "code does not decode to result"
    if tab.nan_codes:
        assert set(code[isnan].tolist()) <= tab.nan_codes, "NaN result with a non-NaN code"
    else:
        assert np.all(code[isnan] == -1), "NaN result in a format without NaN must have no code"
    if want_codes is not None:
        both = ~isnan & _same(got, want)
        bad = np.flatnonzero(both & (code != want_codes))
        assert not len(bad), f"{len(bad)} codes differ from the library's, e.g. result " \
            f"{got[bad[0]]!r}: mpsim 0x{code[bad[0]]:x}, library 0x{want_codes[bad[0]]:x}"


def _rounding_cases():
    for name in PRESET_NAMES:
        yield pytest.param(name, "ml_dtypes", "rne", False, id=f"{name}-ml_dtypes-rne")
        for m in MODES:
            for sat in (False, True):
                yield pytest.param(name, "gfloat", m, sat,
                                   id=f"{name}-gfloat-{m}{'-sat' if sat else ''}")


@pytest.mark.parametrize("name,library,mode,sat", list(_rounding_cases()))
def test_rounding(mpsim, name, library, mode, sat):
    p = PRESETS[name]
    kind = "small" if sat else ("main" if mode == "rne" else "modes")
    x = samples(name)[kind]
    got, code = mpsim.get(name, kind, mode, sat)
    assert len(got) == len(x)
    if library == "ml_dtypes":
        want, ml_codes = ml_convert(p, x)
        # Every input of this sample is exact in fp32: float32 and float64 inputs must agree.
        want32, _ = ml_convert(p, _f32(x))
        assert np.all(_same(want, want32)), "ml_dtypes: float64 and float32 inputs disagree"
        _check_codes(name, got, code, want, ml_codes)
        check(name, library, mode, sat, x, got, want)
    else:
        _check_codes(name, got, code)
        want, raised = gfloat_ndarray(_gfloat_fi(p), x, mode, sat)
        check(name, library, mode, sat, x, got, want, raised=raised)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_rounding_vs_gfloat_round_float(mpsim, name):
    """The scalar reference gfloat.round_float on the small sample, all modes, sat off and on."""
    fi = _gfloat_fi(PRESETS[name])
    x = samples(name)["small"]
    for mode in MODES:
        for sat in (False, True):
            got, _ = mpsim.get(name, "small", mode, sat)
            want, raised = gfloat_scalar(fi, x, mode, sat)
            check(name, "gfloat.round_float", mode, sat, x, got, want, raised=raised)


# ------------------------------------------------------------------------------------------
# 3. float64 inputs that fp32 cannot hold

# ml_dtypes 0.6.0 converts float64 to every one of its dtypes through float32 (so such inputs are
# rounded twice); numpy's float16 rounds float64 directly. The test below detects the path and
# insists on this list, so a change in ml_dtypes shows up here (and in docs/crosscheck.md).
ML_DTYPES_VIA_FP32 = frozenset(PRESET_NAMES) - {"fp16"}


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_float64_inputs_vs_gfloat(mpsim, name, mode):
    x = samples(name)["f64"]
    got, _ = mpsim.get(name, "f64", mode)
    want, raised = gfloat_ndarray(_gfloat_fi(PRESETS[name]), x, mode, False)
    check(name, "gfloat", mode, False, x, got, want, raised=raised, must_exercise=False)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_float64_inputs_vs_ml_dtypes(mpsim, name):
    p = PRESETS[name]
    x = samples(name)["f64"]
    got64, _ = mpsim.get(name, "f64", "rne", carrier="fp64")
    got32, _ = mpsim.get(name, "f64", "rne", carrier="fp32")
    want, _ = ml_convert(p, x)
    want_via32, _ = ml_convert(p, _f32(x))
    via_fp32 = bool(np.all(_same(want, want_via32))) and not np.all(_same(want, got64))
    assert via_fp32 == (name in ML_DTYPES_VIA_FP32), (
        f"{name}: ml_dtypes float64 conversion {'goes' if via_fp32 else 'no longer goes'} "
        "through float32; update ML_DTYPES_VIA_FP32 and docs/crosscheck.md")
    if via_fp32:
        # ml_dtypes sees float32(x): compare with mpsim reading the inputs into an fp32 carrier,
        # which must agree (up to the known differences, judged on float32(x)).
        x32 = _f32(x).astype(np.float64)
        check(name, "ml_dtypes", "rne", False, x32, got32, want, must_exercise=False)
        # and the double rounding is real: mpsim (fp64 carrier, one rounding) differs from
        # ml_dtypes on some of these inputs, all of them ones whose fp32 rounding changed the
        # result.
        differ = ~_same(got64, got32)
        assert differ.any(), f"{name}: no double-rounding case in the float64 sample"
    else:
        check(name, "ml_dtypes", "rne", False, x, got64, want, must_exercise=False)
