#!/usr/bin/env bash
# Prepares a Debian 12 machine to build and test mpsim: system packages, the Python test
# environment (.venv at the repository root) and a Release build in build/.
# Idempotent: each step is skipped when its result is already there, so a machine that has
# everything touches neither apt nor PyPI and only re-runs the (incremental) build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '==> setup: %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

# --- system packages ----------------------------------------------------------------------
PACKAGES=(
  build-essential cmake g++ pkg-config          # toolchain
  libgtest-dev libgmock-dev libbenchmark-dev    # tests and benchmarks
  libcli11-dev nlohmann-json3-dev libfmt-dev libtomlplusplus-dev  # CLI, JSON, output, configs
  libmpfr-dev libgmp-dev                        # arbitrary-precision test oracle
  zlib1g-dev                                    # gzip data sets
  libhwy-dev                                    # Highway: SIMD kernels with run-time dispatch
  libopenblas-openmp-dev                        # FP32 baseline GEMM (shares the OpenMP runtime)
  dataset-fashion-mnist                         # training and IDX-reader tests
)

# `python3 -m venv` needs ensurepip. A pyenv or python.org build has it; Debian's python3
# ships it separately in python3-venv, so that package is asked for only when it is missing.
PYTHON="${PYTHON:-python3}"
python_can_venv() {
  command -v "$PYTHON" >/dev/null 2>&1 && "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1
}
if ! python_can_venv; then
  PACKAGES+=(python3 python3-venv)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  # `dpkg -s` also succeeds for removed-but-not-purged packages; only "install ok installed"
  # means the files are there.
  if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    die "not root and no sudo; install these packages first: ${missing[*]}"
  fi
  log "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
else
  log "Debian packages: all ${#PACKAGES[@]} present"
fi
python_can_venv || die "'$PYTHON -m venv' still does not work (is python3-venv installed?)"

# --- Python test environment --------------------------------------------------------------
VENV="$ROOT/.venv"
REQS="$ROOT/scripts/requirements-test.txt"
STAMP="$VENV/.requirements-test.sha256"

# A venv whose interpreter has gone (Python upgraded or removed) cannot be repaired in place.
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "creating the Python environment in .venv ($("$PYTHON" --version 2>&1))"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the requirements file changed (its hash is kept beside the venv) or a
# package has gone missing, so that repeated runs stay offline.
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] ||
   ! "$VENV/bin/python" -c 'import gfloat, ml_dtypes, numpy, pytest' >/dev/null 2>&1; then
  log "installing Python test requirements from scripts/requirements-test.txt"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" ||
    die "pip install -r scripts/requirements-test.txt failed"
  printf '%s\n' "$want" >"$STAMP"
else
  log "Python test requirements: up to date"
fi

# --- build ----------------------------------------------------------------------------------
log "configuring and building (Release) in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release || die "CMake configure failed"
cmake --build build -j"$(nproc)" || die "build failed"
log "done"
