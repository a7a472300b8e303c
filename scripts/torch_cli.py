"""PyTorch stand-in for `blasnet run`, with the same arguments and file formats.

check_parity.py --self-test runs this instead of the Swift binary, which
exercises all of the parity plumbing (files, names, comparisons) without
BLASNet.  It also serves as an executable specification of the CLI contract:

  torch_cli.py run --arch ARCH --weights W.safetensors --input X.safetensors
                   --output OUT.safetensors [--num-classes K] [--in-chans C]
                   [--stem imagenet|cifar] [--train] [--threads N]

W: float32 state_dict by PyTorch name (num_batches_tracked as I64).
X: `input` F32 [N,C,H,W]; with --train also `target` I64 [N].
OUT: `logits` [N,K]; with --train also `loss` (F32 scalar), `grad.<param>`
for every trainable parameter and `<bn>.running_mean` / `<bn>.running_var`
after the step.  All outputs F32.

--dtype (given before `run`; not part of the blasnet CLI) computes in another precision, e.g.
bfloat16 to check that check_parity notices an implementation that is too
inaccurate.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import ARCHS, STEMS, reference_outputs  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Before the subcommand, so `--blasnet "torch_cli.py --dtype bfloat16"` works.
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one forward (and with --train, backward) pass")
    run.add_argument("--arch", required=True, choices=ARCHS)
    run.add_argument("--weights", required=True)
    run.add_argument("--input", required=True)
    run.add_argument("--output", required=True)
    run.add_argument("--num-classes", type=int, default=1000)
    run.add_argument("--in-chans", type=int, default=3)
    run.add_argument("--stem", choices=STEMS, default="imagenet")
    run.add_argument("--train", action="store_true")
    run.add_argument("--threads", type=int)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = load_file(args.weights)
    batch = load_file(args.input)
    if "input" not in batch:
        print(f"error: {args.input}: no tensor named 'input'", file=sys.stderr)
        return 1
    target = batch.get("target")
    if args.train and target is None:
        print(f"error: {args.input}: --train needs a tensor named 'target' (I64 [N])", file=sys.stderr)
        return 1
    outputs = reference_outputs(args.arch, args.num_classes, args.in_chans, args.stem, weights,
                                batch["input"], target, args.train, dtype=DTYPES[args.dtype])
    save_file({k: v.to(torch.float32).contiguous() for k, v in outputs.items()}, args.output,
              metadata={"arch": args.arch, "producer": "torch_cli.py"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
