"""Generate the PyTorch reference fixture for BLASNet's InstanceNorm2d and LayerNorm layers.

Usually run through scripts/make-norm-fixtures, which provides the virtualenv.

The model fixtures (make_fixtures.py) put GroupNorm in a ResNet's norm slots; this one
runs the torch.nn modules BLASNet's InstanceNorm2d and LayerNorm follow, on their own:

  instance  nn.InstanceNorm2d(C, affine=True, track_running_stats=True) (eps 1e-5,
            momentum 0.1) with weight, bias, running_mean and running_var set to
            non-trivial values, on x [N, C, H, W] = INSTANCE_SHAPE:
              training: y = m(input.0), (y * dy).sum().backward();
                        then y1 = m(input.1) (a second step of the running statistics)
              eval:     y = m(input.0) with the running statistics after both steps,
                        (y * dy).sum().backward() with fresh gradients
  layer     nn.LayerNorm(F) (eps 1e-5, elementwise affine) on x [N, F] = LAYER_SHAPE,
            weight and bias set: y = m(input), (y * dy).sum().backward()

Each channel of the instance input has its own offset and scale (so the running means
and variances move visibly and differ per channel); the layer input's features do too.
The data come from torch.Generator().manual_seed(SEED) in float32 and are stored;
references are computed in float64 from those float32 values and stored as float32.

Keys (float32, PyTorch layouts; BLASNet's layers take [C, N, H, W] and [F, N]):
  instance.input.0, instance.input.1, instance.dy            [N, C, H, W]
  instance.weight, instance.bias                             [C]
  instance.running_mean, instance.running_var                [C]  before training
  instance.train.output, instance.train.grad.input           [N, C, H, W]
  instance.train.grad.weight, instance.train.grad.bias       [C]
  instance.train.running_mean.<k>, .running_var.<k>          [C]  after step k = 1, 2
  instance.train.output.2                                    [N, C, H, W]  second step's output
  instance.train.num_batches_tracked                         int64 []  (torch never counts it)
  instance.eval.output, instance.eval.grad.input             [N, C, H, W]
  instance.eval.grad.weight, instance.eval.grad.bias         [C]
  layer.input, layer.dy                                      [N, F]
  layer.weight, layer.bias                                   [F]
  layer.output, layer.grad.input                             [N, F]
  layer.grad.weight, layer.grad.bias                         [F]
Metadata:
  torch, seed (of the data), instance_shape, layer_shape (JSON lists)
  torch_f32_error   JSON {key: relative L2 error of PyTorch's own float32 computation
                    against the float64 reference, median over torch_f32_realisations
                    runs (torch_models.torch_f32_errors)}; the test's bound per key is
                    max(4 * torch_f32_error, 1e-5 (outputs, statistics) / 1e-4 (gradients)),
                    as in the model fixtures (PyTorchParityTests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import torch_f32_errors  # noqa: E402

SEED = 3
INSTANCE_SHAPE = (3, 4, 5, 7)   # N, C, H, W: odd planes, several samples per channel
LAYER_SHAPE = (6, 10)           # N, F
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                           "Tests", "BLASNetTests", "Fixtures", "norm_layers.safetensors")


def make_data() -> dict[str, torch.Tensor]:
    """The float32 inputs, upstream gradients and starting state of both layers."""
    g = torch.Generator().manual_seed(SEED)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    n, c, h, w = INSTANCE_SHAPE
    offset, scale = randn(1, c, 1, 1), 0.5 + 1.5 * torch.rand(1, c, 1, 1, generator=g)
    f = LAYER_SHAPE[1]
    feature_offset, feature_scale = randn(1, f), 0.5 + 1.5 * torch.rand(1, f, generator=g)
    return {
        "instance.input.0": randn(n, c, h, w) * scale + offset,
        "instance.input.1": randn(n, c, h, w) * scale + offset + 0.5,
        "instance.dy": randn(n, c, h, w),
        "instance.weight": 1 + 0.25 * randn(c),
        "instance.bias": 0.1 * randn(c),
        "instance.running_mean": 0.2 * randn(c),
        "instance.running_var": 0.5 + torch.rand(c, generator=g),
        "layer.input": randn(*LAYER_SHAPE) * feature_scale + feature_offset,
        "layer.dy": randn(*LAYER_SHAPE),
        "layer.weight": 1 + 0.25 * randn(f),
        "layer.bias": 0.1 * randn(f),
    }


def references(data: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every reference key, computed by the torch.nn modules in `dtype`."""
    d = {k: v.to(dtype) for k, v in data.items()}
    out: dict[str, torch.Tensor] = {}

    channels = INSTANCE_SHAPE[1]
    m = nn.InstanceNorm2d(channels, affine=True, track_running_stats=True).to(dtype)
    with torch.no_grad():
        m.weight.copy_(d["instance.weight"])
        m.bias.copy_(d["instance.bias"])
        m.running_mean.copy_(d["instance.running_mean"])
        m.running_var.copy_(d["instance.running_var"])

    def step(prefix: str, x: torch.Tensor) -> None:
        x = x.clone().requires_grad_(True)
        m.zero_grad(set_to_none=True)
        y = m(x)
        (y * d["instance.dy"]).sum().backward()
        out[prefix + "output"] = y.detach()
        out[prefix + "grad.input"] = x.grad
        out[prefix + "grad.weight"] = m.weight.grad.clone()
        out[prefix + "grad.bias"] = m.bias.grad.clone()

    m.train()
    step("instance.train.", d["instance.input.0"])
    out["instance.train.running_mean.1"] = m.running_mean.clone()
    out["instance.train.running_var.1"] = m.running_var.clone()
    with torch.no_grad():
        out["instance.train.output.2"] = m(d["instance.input.1"])
    out["instance.train.running_mean.2"] = m.running_mean.clone()
    out["instance.train.running_var.2"] = m.running_var.clone()
    m.eval()
    step("instance.eval.", d["instance.input.0"])

    ln = nn.LayerNorm(LAYER_SHAPE[1]).to(dtype)
    with torch.no_grad():
        ln.weight.copy_(d["layer.weight"])
        ln.bias.copy_(d["layer.bias"])
    x = d["layer.input"].clone().requires_grad_(True)
    y = ln(x)
    (y * d["layer.dy"]).sum().backward()
    out.update({"layer.output": y.detach(), "layer.grad.input": x.grad,
                "layer.grad.weight": ln.weight.grad, "layer.grad.bias": ln.bias.grad})
    # Kept for the test: InstanceNorm2d.forward never increments it.
    out["instance.train.num_batches_tracked"] = m.num_batches_tracked.clone()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="fixture file (default: %(default)s)")
    parser.add_argument("--f32-realisations", type=int, default=5, metavar="N",
                        help="float32 runs whose median error becomes torch_f32_error (default: %(default)s)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    data = make_data()
    ref = references(data, torch.float64)
    counter = ref.pop("instance.train.num_batches_tracked")
    # The float32 realisations nudge every stored input by at most one ulp (torch_models.f32_realisation).
    errors = torch_f32_errors(ref, args.f32_realisations,
                              lambda d, _x: {k: v for k, v in references(d, torch.float32).items() if k in ref},
                              data, torch.zeros(0))

    tensors = {k: v.contiguous() for k, v in data.items()}
    tensors.update({k: v.to(torch.float32).contiguous() for k, v in ref.items()})
    tensors["instance.train.num_batches_tracked"] = counter
    metadata = {
        "torch": torch.__version__,
        "seed": str(SEED),
        "instance_shape": json.dumps(list(INSTANCE_SHAPE)),
        "layer_shape": json.dumps(list(LAYER_SHAPE)),
        "torch_f32_error": json.dumps(errors, sort_keys=True, allow_nan=False),
        "torch_f32_realisations": str(args.f32_realisations),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=metadata)
    os.chmod(args.out, 0o644)  # safetensors writes 0600; this is an ordinary repo file
    print(f"{os.path.relpath(args.out)}: {len(tensors)} tensors, {os.path.getsize(args.out) / 1024:.1f} KiB, "
          f"torch f32 rel error {min(errors.values()):.2e} .. {max(errors.values()):.2e} "
          f"(worst {max(errors, key=errors.get)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
