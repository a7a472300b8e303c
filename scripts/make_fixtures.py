"""Generate the PyTorch reference fixtures used by the Swift unit tests.

Usually run through scripts/make-fixtures, which provides the virtualenv.

Each fixture holds float64-computed references (stored as float32) for one
small CIFAR-stem network.  The weights themselves are NOT stored: the Swift
test regenerates them with the same generator (scripts/fixture_weights.py),
which keeps each file well under 1 MB.

Keys (all float32 unless noted):
  input                      [4,3,19,17]  deterministic_tensor("input", scale 1, offset 0, seed 0)
  target                     int64 [4]    [3, 7, 0, 9]
  eval.logits                [4,10]       model.eval() forward
  train.logits               [4,10]       model.train() forward (batch statistics)
  train.loss                 []           mean cross-entropy
  train.grad.<param>         full gradient, for params with numel <= 16384
  train.gradsample.<param>   grad.flatten()[::numel // 4096][:4096], for larger params
  train.<bn>.running_mean    running stats after the single training step
  train.<bn>.running_var     (momentum 0.1, unbiased batch variance)
Metadata:
  torch, seed              versions/seed used
  torch_f32_error          JSON {key: relative L2 error of PyTorch's own float32
                           computation against the float64 reference}: median over
                           torch_f32_realisations runs (see torch_models.py)
  torch_f32_realisations   that number of runs
  kink_error               JSON {key: bound on the gradient error a correct float32
                           implementation can get from ReLU masks flipped near
                           zero} (see torch_models.kink_errors); 0 for non-gradients
  near_kinks               how many ReLU inputs that bound covers
  A robust test tolerance per key is
      max(10 * torch_f32_error, 1e-5 (outputs) / 1e-4 (gradients)) + kink_error;
  without the kink term a correct float32 implementation fails now and then.
  arch, stem, num_classes, in_chans
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_weights import deterministic_state_dict, deterministic_tensor  # noqa: E402
from torch_models import build, kink_errors, reference_outputs, torch_f32_errors  # noqa: E402

SEED = 0
NUM_CLASSES = 10
IN_CHANS = 3
STEM = "cifar"
INPUT_SHAPE = (4, IN_CHANS, 19, 17)
TARGET = [3, 7, 0, 9]
FULL_GRAD_MAX = 16384
SAMPLE_COUNT = 4096
ARCHS = ("resnet18", "seresnet18")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                           "Tests", "BLASNetTests", "Fixtures")


def fixture_entries(outputs: dict[str, torch.Tensor], train: bool) -> dict[str, torch.Tensor]:
    """Map CLI-style output names to fixture keys, subsampling large gradients.

    Large conv gradients would dominate the file size; a strided sample still
    touches every output channel and most input channels, so a wrong
    gradient is overwhelmingly likely to show up in it.
    """
    prefix = "train." if train else "eval."
    entries = {}
    for name, t in outputs.items():
        if name.startswith("grad."):
            flat = t.flatten()
            if flat.numel() > FULL_GRAD_MAX:
                stride = flat.numel() // SAMPLE_COUNT
                entries[prefix + "gradsample." + name[len("grad."):]] = flat[::stride][:SAMPLE_COUNT]
                continue
        entries[prefix + name] = t
    return entries


def make_fixture(arch: str, realisations: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    shapes = build(arch, NUM_CLASSES, IN_CHANS, STEM).state_dict()
    weights = deterministic_state_dict(shapes, seed=SEED)
    x = deterministic_tensor("input", INPUT_SHAPE, seed=SEED, scale=1.0, offset=0.0)
    target = torch.tensor(TARGET, dtype=torch.int64)

    def run(w: dict[str, torch.Tensor], xi: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        entries: dict[str, torch.Tensor] = {}
        for train in (False, True):
            outputs = reference_outputs(arch, NUM_CLASSES, IN_CHANS, STEM, w, xi, target, train, dtype=dtype)
            entries.update(fixture_entries(outputs, train))
        return entries

    ref = run(weights, x, torch.float64)
    errors = torch_f32_errors(ref, realisations, lambda w, xi: run(w, xi, torch.float32), weights, x)
    kinks, found, used = kink_errors(arch, NUM_CLASSES, IN_CHANS, STEM, weights, x, target, ref,
                                     transform=lambda d: fixture_entries(d, train=True), max_kinks=10**6)
    assert found == used

    tensors = {"input": x, "target": target}
    tensors.update({k: v.to(torch.float32).contiguous() for k, v in ref.items()})
    metadata = {
        "torch": torch.__version__,
        "seed": str(SEED),
        "torch_f32_error": json.dumps(errors, sort_keys=True),
        "torch_f32_realisations": str(realisations),
        "kink_error": json.dumps(kinks, sort_keys=True),
        "near_kinks": str(found),
        # Self-description, so a reader doesn't need this script to interpret the file.
        "arch": arch,
        "stem": STEM,
        "num_classes": str(NUM_CLASSES),
        "in_chans": str(IN_CHANS),
    }
    return tensors, metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=DEFAULT_OUT, help="fixture directory (default: %(default)s)")
    parser.add_argument("--arch", action="append", choices=ARCHS, help="only these archs (repeatable)")
    parser.add_argument("--f32-realisations", type=int, default=5, metavar="N",
                        help="float32 runs whose median error becomes torch_f32_error (default: %(default)s)")
    args = parser.parse_args()

    # Single-threaded float64 makes the reference independent of the
    # machine's core count (reduction order), so regenerating is reproducible.
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)
    for arch in args.arch or ARCHS:
        tensors, metadata = make_fixture(arch, args.f32_realisations)
        path = os.path.join(args.out_dir, f"{arch}_{STEM}.safetensors")
        save_file(tensors, path, metadata=metadata)
        os.chmod(path, 0o644)  # safetensors writes 0600; these are ordinary repo files
        errors = json.loads(metadata["torch_f32_error"])
        kinks = json.loads(metadata["kink_error"])
        size = os.path.getsize(path)
        print(f"{os.path.relpath(path)}: {len(tensors)} tensors, {size / 1024:.1f} KiB, "
              f"torch f32 rel error {min(errors.values()):.2e} .. {max(errors.values()):.2e} "
              f"(worst {max(errors, key=errors.get)}); {metadata['near_kinks']} near-kink ReLU inputs, "
              f"kink error up to {max(kinks.values()):.2e}")
        if size > 2 * 1024 * 1024:
            print(f"error: {path} exceeds 2 MB", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
