#!/usr/bin/env bash
# The main job: sets the machine up (scripts/setup.sh), then trains LeNet-5 on Fashion-MNIST twice
# from the same seed -- in plain FP32 and with every GEMM (forward, data gradient, weight and bias
# gradients) on the bit-accurate E5M2(CFG5) x E5M2(CFG5) -> E6M5 MAC -- and prints both runs'
# accuracy side by side. Extra arguments are config overrides for both runs (key=value, e.g.
# train.epochs=10). Setup's progress goes to stderr; the runs are kept in runs/main/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh >&2

OUT=runs/main
rm -rf "$OUT"  # this job's own runs from a previous invocation
mkdir -p "$OUT"
COMMON=(train.epochs=5 "$@")

echo "==> LeNet-5 on Fashion-MNIST, plain FP32 (OpenBLAS)"
build/mpsim train --config configs/lenet5_fmnist_fp32.toml --run-dir "$OUT/fp32" --json "${COMMON[@]}" \
  >"$OUT/fp32.json"
echo "==> LeNet-5 on Fashion-MNIST, every GEMM on the MAC in=e5m2:cfg5 prod=exact acc=e6m5 order=seq"
build/mpsim train --config configs/lenet5_fmnist_e5m2_e6m5.toml --run-dir "$OUT/e5m2_e6m5" --json "${COMMON[@]}" \
  >"$OUT/e5m2_e6m5.json"

.venv/bin/python - "$OUT/fp32.json" "$OUT/e5m2_e6m5.json" <<'PY'
import json, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
print()
print(f"{'precision':<46}{'epochs':>7}{'test acc':>10}{'best':>9}{'img/s':>9}{'wall s':>9}")
for r in runs:
    print(f"{r['precision']:<46}{r['epochs']:>7}{100 * r['test_accuracy']:>9.2f}%{100 * r['best_test_accuracy']:>8.2f}%"
          f"{r['images_per_second']:>9.0f}{r['seconds']:>9.1f}")
a, b = runs
print(f"\nLeNet-5 ({a['parameters']} parameters, {a['macs_per_image'] / 1e6:.2f} M MACs per image per training step);"
      f" accuracy change under the emulated MAC: {100 * (b['test_accuracy'] - a['test_accuracy']):+.2f} points.")
print(f"Runs, metrics and checkpoints: {a['run_dir']}, {b['run_dir']}")
PY
