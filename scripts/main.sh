#!/usr/bin/env bash
# Sets the machine up (see scripts/setup.sh) and runs the mpsim demo; arguments go to
# `mpsim demo`. Setup's progress goes to stderr so that stdout carries only the demo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh >&2
exec build/mpsim demo "$@"
