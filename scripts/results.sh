#!/usr/bin/env bash
# The README's results table: LeNet-5 and ResNet-20 trained on the full Fashion-MNIST training set
# (60,000 images, tested on all 10,000) in plain FP32 and with every GEMM on the MAC
# "in=e5m2:cfg5 prod=exact acc=e6m5 order=seq", with the example configs in configs/.
# About 45 minutes on 2 cores (ResNet-20 under the emulated MAC takes most of it).
#
#   bash scripts/results.sh                      # runs into runs/results/, prints the table
#   LENET_EPOCHS=2 RESNET_EPOCHS=1 bash scripts/results.sh   # a shorter table
#
# Extra arguments are config overrides passed to every run (e.g. run.threads=2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh >&2

LENET_EPOCHS="${LENET_EPOCHS:-10}"
RESNET_EPOCHS="${RESNET_EPOCHS:-5}"
OUT=runs/results
rm -rf "$OUT"  # this script's own runs from a previous invocation
mkdir -p "$OUT"

run() {  # name config epochs [overrides...]
  local name="$1" config="$2" epochs="$3"
  shift 3
  echo "==> $name: build/mpsim train --config $config train.epochs=$epochs $*" >&2
  build/mpsim train --config "$config" --run-dir "$OUT/$name" --json train.epochs="$epochs" "$@" >"$OUT/$name.json"
}

run lenet5_fp32 configs/lenet5_fmnist_fp32.toml "$LENET_EPOCHS" "$@"
run lenet5_e5m2_e6m5 configs/lenet5_fmnist_e5m2_e6m5.toml "$LENET_EPOCHS" "$@"
run resnet20_fp32 configs/resnet20_fmnist_fp32.toml "$RESNET_EPOCHS" "$@"
run resnet20_e5m2_e6m5 configs/resnet20_fmnist_e5m2_e6m5.toml "$RESNET_EPOCHS" "$@"

.venv/bin/python - "$OUT" lenet5_fp32 lenet5_e5m2_e6m5 resnet20_fp32 resnet20_e5m2_e6m5 <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| model | precision | epochs | test accuracy | best | wall time | images/s (training) |")
print("|---|---|---|---|---|---|---|")
for name in sys.argv[2:]:
    r = json.loads((out / f"{name}.json").read_text())
    minutes, seconds = divmod(round(r["seconds"]), 60)
    print(f"| {r['arch']} | {r['precision']} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% "
          f"| {100 * r['best_test_accuracy']:.2f}% | {minutes} min {seconds:02d} s | {r['images_per_second']:.0f} |")
PY
