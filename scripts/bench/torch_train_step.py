"""PyTorch's time for one training step (forward + cross-entropy + backward) of LeNet-5 and
ResNet-20 at batch 128 on 1x28x28 inputs, the baseline of `mpsim bench train` (issue: FP32 at
>= 0.8x PyTorch's speed). Outside CI: needs torch (scripts/golden/requirements.txt).

    .venv/bin/pip install -r scripts/golden/requirements.txt
    .venv/bin/python scripts/bench/torch_train_step.py --threads 1 2
    build/mpsim bench train --threads 1,2

The models are the ones the golden values come from (scripts/golden/make_golden.py), so both
tools time the same architectures. Prints the median of --reps steps after warm-up and the
process's peak resident memory (which includes the Python runtime and torch itself).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import make_golden  # noqa: E402  (the shared model definitions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    models = {"lenet5": lambda: make_golden.LeNet5(), "resnet20": lambda: make_golden.ResNet20("A")}
    print(f"torch {torch.__version__}: forward + backward of one batch of {args.batch} (1x28x28), "
          f"median of {args.reps}")
    print(f"{'model':<10}{'threads':>8}{'s/batch':>12}{'images/s':>12}{'peak MiB':>10}")
    for name, make in models.items():
        for t in args.threads:
            torch.set_num_threads(t)
            model = make()
            x = torch.randn(args.batch, 1, 28, 28)
            y = torch.randint(0, 10, (args.batch,))
            loss_fn = torch.nn.CrossEntropyLoss()

            def step() -> None:
                model.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()

            for _ in range(3):
                step()
            times = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            s = sorted(times)[len(times) // 2]
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{name:<10}{t:>8}{s:>12.4f}{args.batch / s:>12.1f}{peak:>10.0f}")


if __name__ == "__main__":
    main()
