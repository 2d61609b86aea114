#!/usr/bin/env python3
"""Writes the PyTorch golden values of tests/golden/*.safetensors (read by tests/test_nn_golden.cpp).

Every file holds one case: the inputs, the parameters and buffers under the names the C++ layers
use ("weight", "bias", "running_mean", ... for single layers; the state_dict keys for models),
and what PyTorch computes from them in float32 on the CPU:

  single layers  "x" input, "dy" = R (the loss is L = sum(y * R), so dL/dy = R), "y" output,
                 "grad/x" = dL/dx, "grad/<param>" = dL/dparam, "after/<buffer>" after the step;
  loss           "logits", "labels" (int64), "loss" (rank 0), "grad/logits";
  models         every state_dict entry before the step, "x", "labels", "logits", "loss" (mean
                 cross-entropy), "grad/<param>" and "after/<buffer>".

Each file's metadata names the case ("module": the module's repr), the torch version, and
"fp32_error": per output, max|fp32 - fp64| / max|fp64|, the same case rerun in float64. That is
how far float32 itself is from the exact values; the C++ tolerance must sit well above it.

The files are committed: CI has no torch and never runs this script. Regenerate them with
    .venv/bin/pip install -r scripts/golden/requirements.txt
    .venv/bin/python scripts/golden/make_golden.py
Fixed seeds, one thread, deterministic algorithms: a rerun with the pinned torch on the same
kind of CPU reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save

ROOT = Path(__file__).resolve().parents[2]


def setup_torch() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def rel_error(a: torch.Tensor, exact: torch.Tensor) -> float:
    """max|a - exact| / max|exact| (0 for an all-zero exact value with a == exact)."""
    a, exact = a.double(), exact.double()
    scale = exact.abs().max().item() if exact.numel() else 0.0
    err = (a - exact).abs().max().item() if exact.numel() else 0.0
    return err / scale if scale > 0 else err


def canonical_header(data: bytes) -> bytes:
    """The safetensors library writes "__metadata__" in hash order, which changes from run to run;
    the header is re-serialized with sorted keys (and padded to 8 bytes again) so that reruns
    give identical files. The data section is the library's, untouched."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def write_case(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, str], out_dir: Path) -> None:
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    meta = {"generator": "scripts/golden/make_golden.py", "torch": torch.__version__, **meta}
    path = out_dir / f"{name}.safetensors"
    path.write_bytes(canonical_header(save(tensors, metadata=meta)))
    # The official reader must load the file back unchanged.
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items()), name
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(tensors)} tensors, "
          f"{path.stat().st_size} bytes")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- single layers --------------------------------------------------------------------------

def run_layer(module: nn.Module, x: torch.Tensor, dy_seed: int, train: bool):
    """y = module(x), then backward of L = sum(y * R). Returns y, R, dL/dx, {param: grad}."""
    module.train(train)
    x = x.clone().requires_grad_(True)
    y = module(x)
    # Drawn in float32 for both runs (a float64 draw would be other numbers).
    r = torch.randn(y.shape, generator=generator(dy_seed)).to(y.dtype)
    (y * r).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return y.detach(), r, x.grad.clone(), grads


def layer_case(name: str, module: nn.Module, x: torch.Tensor, out_dir: Path, seed: int, train: bool = True,
               prepare=None) -> None:
    """Runs `module` on x in float32 and float64 and saves the float32 values. R is drawn from
    seed + 50, apart from the seeds the cases use for inputs (seed + 1) and parameters: drawn from
    the input's seed, R would repeat x's numbers, and batch norm's input gradient would vanish.
    An eval-mode case stores gradients too (PyTorch's backward through running statistics)."""
    if prepare is not None:
        with torch.no_grad():
            prepare(module)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    m64 = copy.deepcopy(module).double()

    y, r, dx, grads = run_layer(module, x, seed + 50, train)
    y64, _, dx64, grads64 = run_layer(m64, x.double(), seed + 50, train)

    tensors = {"x": x, "dy": r, "y": y, "grad/x": dx, **before}
    errors = {"y": rel_error(y, y64), "grad/x": rel_error(dx, dx64)}
    for n, g in grads.items():
        tensors[f"grad/{n}"] = g
        errors[f"grad/{n}"] = rel_error(g, grads64[n])
    for n, b in module.named_buffers():
        tensors[f"after/{n}"] = b
        errors[f"after/{n}"] = rel_error(b, dict(m64.named_buffers())[n])
    write_case(name, tensors, {"module": repr(module), "mode": "train" if train else "eval",
                               "fp32_error": json.dumps(errors, sort_keys=True)}, out_dir)


def randn(shape, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=generator(seed)) * scale + shift


def layer_cases(out_dir: Path) -> None:
    torch.manual_seed(1)
    layer_case("linear", nn.Linear(5, 3, bias=True), randn((4, 5), 101), out_dir, 100)
    torch.manual_seed(2)
    layer_case("conv2d_k3_s1_p1", nn.Conv2d(3, 4, 3, stride=1, padding=1, bias=True),
               randn((2, 3, 6, 6), 201), out_dir, 200)
    torch.manual_seed(3)
    layer_case("conv2d_k5_s2_p2_nobias", nn.Conv2d(2, 3, 5, stride=2, padding=2, bias=False),
               randn((2, 2, 9, 9), 301), out_dir, 300)
    torch.manual_seed(4)
    layer_case("conv2d_k1_s2", nn.Conv2d(4, 2, 1, stride=2), randn((2, 4, 7, 7), 401), out_dir, 400)

    # Batch norm: per-channel offsets and scales in the input, non-default affine parameters
    # and running statistics, so that every term of the forward, backward and update matters.
    def bn_prepare(seed: int):
        def prepare(bn: nn.BatchNorm2d) -> None:
            g = generator(seed)
            bn.weight.copy_(1 + 0.5 * torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(0.5 * torch.randn(bn.num_features, generator=g))
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
            bn.num_batches_tracked.fill_(3)
        return prepare

    bn_x = randn((4, 3, 5, 5), 501) * torch.tensor([1.0, 3.0, 0.25]).view(1, 3, 1, 1) + \
        torch.tensor([0.5, -2.0, 4.0]).view(1, 3, 1, 1)
    layer_case("batchnorm2d_train", nn.BatchNorm2d(3), bn_x, out_dir, 500, train=True, prepare=bn_prepare(502))
    layer_case("batchnorm2d_eval", nn.BatchNorm2d(3), bn_x, out_dir, 510, train=False, prepare=bn_prepare(512))

    # ReLU at exact zeros: PyTorch passes no gradient where x <= 0.
    relu_x = randn((2, 3, 4, 4), 601)
    relu_x.view(-1)[::7] = 0.0
    layer_case("relu", nn.ReLU(), relu_x, out_dir, 600)
    layer_case("maxpool2d_k2_s2", nn.MaxPool2d(2, 2), randn((2, 3, 6, 6), 701), out_dir, 700)
    # Overlapping windows over small integers: many ties, where the gradient must go to the
    # first maximum of each window in row-major order, and inputs shared by several windows.
    tie_x = torch.randint(-2, 3, (2, 2, 7, 7), generator=generator(711)).float()
    layer_case("maxpool2d_k3_s2", nn.MaxPool2d(3, 2), tie_x, out_dir, 710)
    layer_case("avgpool2d_k2_s2", nn.AvgPool2d(2, 2), randn((2, 3, 6, 6), 801), out_dir, 800)
    layer_case("global_avgpool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
               randn((2, 3, 5, 5), 901), out_dir, 900)
    layer_case("flatten", nn.Flatten(), randn((2, 3, 4, 5), 1001), out_dir, 1000)
    layer_case("zeropad2d_2", nn.ZeroPad2d(2), randn((2, 3, 4, 5), 1101), out_dir, 1100)

    for name, eps in (("cross_entropy", 0.0), ("cross_entropy_ls01", 0.1)):
        logits = randn((6, 10), 1201, scale=3.0)
        labels = torch.tensor([3, 0, 9, 3, 7, 1], dtype=torch.int64)
        results = {}
        for dtype in (torch.float32, torch.float64):
            z = logits.detach().to(dtype).clone().requires_grad_(True)
            loss = F.cross_entropy(z, labels, label_smoothing=eps)
            loss.backward()
            results[dtype] = (loss.detach(), z.grad.clone())
        (loss, grad), (loss64, grad64) = results[torch.float32], results[torch.float64]
        write_case(name, {"logits": logits, "labels": labels, "loss": loss, "grad/logits": grad},
             {"module": f"CrossEntropyLoss(label_smoothing={eps})", "mode": "train",
              "fp32_error": json.dumps({"loss": rel_error(loss, loss64),
                                        "grad/logits": rel_error(grad, grad64)}, sort_keys=True)}, out_dir)


# --- models ---------------------------------------------------------------------------------

class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class ShortcutA(nn.Module):
    """Option A: subsample by 2 and zero-pad planes//4 channels on each side (no parameters)."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == "A":
                self.shortcut = ShortcutA(planes)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, option: str, in_channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for b in range(3):
                blocks.append(BasicBlock(in_planes, planes, stride if b == 0 else 1, option))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


def model_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor):
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {f"grad/{n}": p.grad.clone() for n, p in model.named_parameters()}
    after = {f"after/{n}": b.clone() for n, b in model.named_buffers()}
    return logits.detach(), loss.detach(), grads, after


def model_case(name: str, model: nn.Module, out_dir: Path, seed: int, base: dict[str, torch.Tensor] | None = None,
               base_file: str | None = None) -> dict[str, torch.Tensor]:
    """One training step (forward in training mode, mean cross-entropy, backward) on a batch of
    4 random 1x28x28 inputs. With `base`, the entries equal to base's are not stored again (the
    C++ test loads them from base_file)."""
    x = torch.randn((4, 1, 28, 28), generator=generator(seed))
    labels = torch.randint(0, 10, (4,), generator=generator(seed + 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m64 = copy.deepcopy(model).double()
    logits, loss, grads, after = model_step(model, x, labels)
    logits64, loss64, grads64, after64 = model_step(m64, x.double(), labels)

    errors = {"logits": rel_error(logits, logits64), "loss": rel_error(loss, loss64)}
    errors.update({k: rel_error(v, grads64[k]) for k, v in grads.items()})
    errors.update({k: rel_error(v, after64[k]) for k, v in after.items()})
    stored = dict(before)
    meta = {"module": repr(model), "mode": "train"}
    if base is not None:
        stored = {k: v for k, v in before.items() if k not in base or not torch.equal(base[k], v)}
        meta["params_from"] = base_file
    worst = max(errors, key=errors.get)
    meta["fp32_error"] = json.dumps(errors, sort_keys=True)
    meta["fp32_error_max"] = f"{errors[worst]:.3g} ({worst})"
    write_case(name, {**stored, "x": x, "labels": labels, "logits": logits, "loss": loss, **grads, **after}, meta, out_dir)
    return before


def model_cases(out_dir: Path) -> None:
    torch.manual_seed(20)
    model_case("lenet5", LeNet5(), out_dir, 2000)
    torch.manual_seed(21)
    resnet_a = ResNet20("A")
    base = model_case("resnet20_a", resnet_a, out_dir, 2100)
    # Option B shares every parameter of option A's file (same initial values) and adds the
    # 1x1 projection shortcuts; storing only those keeps the committed files small.
    torch.manual_seed(22)
    resnet_b = ResNet20("B")
    shared = {k: v for k, v in base.items() if k in resnet_b.state_dict()}
    missing, unexpected = resnet_b.load_state_dict(shared, strict=False)
    assert not unexpected and all(".shortcut." in k for k in missing), (missing, unexpected)
    model_case("resnet20_b", resnet_b, out_dir, 2100, base=base, base_file="resnet20_a.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden", help="output directory")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    setup_torch()
    layer_cases(args.out)
    model_cases(args.out)
    total = sum(p.stat().st_size for p in args.out.glob("*.safetensors"))
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
