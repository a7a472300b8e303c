"""Compare the `blasnet run` CLI against PyTorch, tensor by tensor.

Usually run through scripts/check-parity, which provides the virtualenv.

For every case this builds the PyTorch model with deterministic weights
(scripts/fixture_weights.py, seeded per case), hands the same weights and
batch to the CLI, and compares each output tensor (logits, loss, gradients,
BatchNorm running statistics) with a float64 PyTorch reference by relative
L2 error ||blasnet - ref|| / ||ref||.

A tensor passes if
    blasnet_err <= min(max(FACTOR * torch_f32_err, FLOOR) + KINK_FACTOR * kink_err, MAX_ALLOWED)
where torch_f32_err is PyTorch float32's own error on that tensor (median
over --f32-realisations runs), FLOOR is --output-floor or --grad-floor, and
kink_err bounds the gradient error a correct float32 implementation can get
from ReLU masks that flip because the pre-activation is within rounding of
zero.  See torch_models.py for why the median and the kink term are needed;
in short, without them a correct float32 implementation fails now and then
by 1e-3.

MAX_ALLOWED exists because deep networks in training mode are badly
conditioned: with these weights PyTorch's own float32 gradients differ from
float64 by ~2% (resnet50) up to ~20% (resnet152), because rounding error is
amplified block after block and then flips many ReLU masks.  FACTOR times
that would accept anything, even all-zero gradients (error 1.0); the cap
keeps such cases a check for gross errors.  The summary counts the tensors
where the cap applied.

The "worst" column names the tensor with the largest blasnet_err / allowed
ratio, i.e. the one closest to failing, and shows that ratio.

Exit status: 0 if every tensor of every case passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(SCRIPTS)
sys.path.insert(0, SCRIPTS)
from fixture_weights import deterministic_state_dict, deterministic_tensor, fnv1a64, uniform  # noqa: E402
from torch_models import ARCHS, build, kink_errors, reference_outputs, rel_l2_error, torch_f32_errors  # noqa: E402

QUICK_ARCHS = ("resnet18", "seresnet18")


@dataclasses.dataclass(frozen=True)
class Case:
    arch: str
    train: bool
    num_classes: int
    in_chans: int
    stem: str
    batch: int
    height: int
    width: int

    @property
    def name(self) -> str:
        mode = "train" if self.train else "eval"
        return (f"{self.arch} {mode} {self.stem} "
                f"{self.batch}x{self.in_chans}x{self.height}x{self.width} k{self.num_classes}")

    @property
    def seed(self) -> int:
        # Derived from the name (not the position in the list) so a case keeps
        # its data when other cases are filtered out.
        return fnv1a64(self.name.encode()) & 0xFFFFFFFF


def default_cases() -> list[Case]:
    cases = []
    for arch in ARCHS:
        # 64x64 leaves a 2x2 last stage, so train-mode BN there still normalises
        # over 2*2*2 = 8 values per channel.
        cases.append(Case(arch, False, 1000, 3, "imagenet", 2, 64, 64))
        cases.append(Case(arch, True, 1000, 3, "imagenet", 2, 64, 64))
        # Odd sizes exercise padding / floor division in every stride-2 layer.
        # Batch 1 only in eval mode: train-mode BN on one value per channel is undefined.
        cases.append(Case(arch, False, 1000, 3, "imagenet", 1, 67, 71))
    for arch in QUICK_ARCHS:
        for train in (False, True):
            cases.append(Case(arch, train, 10, 3, "cifar", 4, 19, 17))
            cases.append(Case(arch, train, 10, 1, "cifar", 4, 28, 28))
    return cases


@dataclasses.dataclass
class TensorResult:
    name: str
    is_grad: bool
    blasnet_err: float
    torch_err: float
    kink_err: float
    allowed: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.blasnet_err <= self.allowed

    @property
    def ratio(self) -> float:
        return self.blasnet_err / self.allowed if self.allowed > 0 else math.inf


@dataclasses.dataclass
class CaseResult:
    case: Case
    tensors: list[TensorResult]
    error: str = ""  # CLI failure or unreadable output: the whole case fails
    extra: list[str] = dataclasses.field(default_factory=list)
    near_kinks: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and all(t.ok for t in self.tensors)


def make_batch(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    x = deterministic_tensor("input", (case.batch, case.in_chans, case.height, case.width),
                             seed=case.seed, scale=1.0, offset=0.0)
    u = uniform("target", case.batch, case.seed)  # in [-1, 1)
    target = np.minimum(((u + 1.0) / 2.0 * case.num_classes).astype(np.int64), case.num_classes - 1)
    return x, torch.from_numpy(target)


def run_cli(cmd: list[str], case: Case, workdir: str, weights: dict[str, torch.Tensor],
            x: torch.Tensor, target: torch.Tensor, threads: int | None,
            timeout: float | None) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Run the CLI on one case; returns (outputs, "") or (None, error message)."""
    w_path = os.path.join(workdir, "weights.safetensors")
    x_path = os.path.join(workdir, "input.safetensors")
    out_path = os.path.join(workdir, "output.safetensors")
    save_file({k: v.contiguous() for k, v in weights.items()}, w_path)
    batch = {"input": x.contiguous()}
    if case.train:
        batch["target"] = target
    save_file(batch, x_path)
    if os.path.exists(out_path):
        os.remove(out_path)  # never compare a stale result from a previous run

    argv = cmd + ["run", "--arch", case.arch, "--weights", w_path, "--input", x_path, "--output", out_path,
                  "--num-classes", str(case.num_classes), "--in-chans", str(case.in_chans), "--stem", case.stem]
    if case.train:
        argv.append("--train")
    if threads:
        argv += ["--threads", str(threads)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout}s: {shlex.join(argv)}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return None, f"exit status {proc.returncode}: {shlex.join(argv)}\n    " + "\n    ".join(tail)
    try:
        return load_file(out_path), ""
    except Exception as e:  # noqa: BLE001 - any unreadable output is a case failure, not a crash
        return None, f"cannot read {out_path}: {e}"


def check_case(case: Case, args: argparse.Namespace, cmd: list[str]) -> CaseResult:
    start = time.monotonic()
    shapes = build(case.arch, case.num_classes, case.in_chans, case.stem).state_dict()
    weights = deterministic_state_dict(shapes, seed=case.seed)
    x, target = make_batch(case)

    def reference(w: dict[str, torch.Tensor], xi: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return reference_outputs(case.arch, case.num_classes, case.in_chans, case.stem, w, xi, target,
                                 case.train, dtype=dtype)

    ref = reference(weights, x, torch.float64)
    f32_errs = torch_f32_errors(ref, args.f32_realisations,
                                lambda w, xi: reference(w, xi, torch.float32), weights, x)
    kinks = {k: 0.0 for k in ref}
    near_kinks = 0
    if case.train and args.kink_factor > 0:
        kinks, near_kinks, _ = kink_errors(case.arch, case.num_classes, case.in_chans, case.stem,
                                           weights, x, target, ref, max_kinks=args.max_kinks)

    workdir = os.path.join(args.keep, case.name.replace(" ", "_")) if args.keep else tempfile.mkdtemp(prefix="parity-")
    os.makedirs(workdir, exist_ok=True)
    try:
        outputs, error = run_cli(cmd, case, workdir, weights, x, target, args.threads, args.timeout)
    finally:
        if not args.keep:
            for f in os.listdir(workdir):
                os.remove(os.path.join(workdir, f))
            os.rmdir(workdir)
    result = CaseResult(case, [], error=error, near_kinks=near_kinks)
    if outputs is None:
        result.seconds = time.monotonic() - start
        return result

    for name, expected in ref.items():
        is_grad = name.startswith("grad.")
        floor = args.grad_floor if is_grad else args.output_floor
        allowed = min(max(args.factor * f32_errs[name], floor) + args.kink_factor * kinks[name], args.max_allowed)
        got = outputs.get(name)
        if got is None:
            err, note = math.inf, "missing"
        elif tuple(got.shape) != tuple(expected.shape):
            err, note = math.inf, f"shape {list(got.shape)}, expected {list(expected.shape)}"
        else:
            err, note = rel_l2_error(got, expected), ""
            if got.dtype != torch.float32:
                note = f"dtype {got.dtype}"
            if not math.isfinite(err):
                note = note or "non-finite values"
        result.tensors.append(TensorResult(name, is_grad, err, f32_errs[name], kinks[name], allowed, note))
    result.extra = sorted(set(outputs) - set(ref))
    result.seconds = time.monotonic() - start
    return result


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def _max_err(tensors: list[TensorResult], grads: bool, attr: str) -> float | None:
    vals = [getattr(t, attr) for t in tensors if t.is_grad == grads]
    return max(vals) if vals else None


COLUMNS = (("case", 44), ("n", 4), ("blas out", 9), ("blas grad", 9), ("f32 out", 9), ("f32 grad", 9),
           ("kinks", 5), ("worst (err/allowed)", 0))


def print_header() -> None:
    print("  ".join(f"{h:<{w}}" if w else h for h, w in COLUMNS))
    print("  ".join("-" * (w or 30) for _, w in COLUMNS))


def print_row(r: CaseResult) -> None:
    status = "ok  " if r.ok else "FAIL"
    if r.error:
        cells = [r.case.name, "-", "-", "-", "-", "-", "-", "CLI error"]
    else:
        worst = max(r.tensors, key=lambda t: t.ratio)
        cells = [r.case.name, str(len(r.tensors)),
                 _fmt(_max_err(r.tensors, False, "blasnet_err")), _fmt(_max_err(r.tensors, True, "blasnet_err")),
                 _fmt(_max_err(r.tensors, False, "torch_err")), _fmt(_max_err(r.tensors, True, "torch_err")),
                 str(r.near_kinks) if r.case.train else "-",
                 f"{worst.name} ({worst.ratio:.2f})"]
    line = "  ".join(f"{c:<{w}}" if w else c for c, (_, w) in zip(cells, COLUMNS))
    print(f"{line}  {status} {r.seconds:.0f}s", flush=True)


def print_details(r: CaseResult, limit: int = 10) -> None:
    print(f"\n{r.case.name} (seed {r.case.seed}):")
    if r.error:
        print(f"  CLI failed: {r.error}")
        return
    bad = sorted((t for t in r.tensors if not t.ok), key=lambda t: -t.ratio)
    for t in bad[:limit]:
        print(f"  {t.name:<44} blasnet {_fmt(t.blasnet_err)}  torch f32 {_fmt(t.torch_err)}  "
              f"kink {_fmt(t.kink_err)}  allowed {_fmt(t.allowed)}  {t.note}")
    if len(bad) > limit:
        print(f"  ... and {len(bad) - limit} more failing tensors")


def select_cases(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Case]:
    archs = set(QUICK_ARCHS) if args.quick else set(ARCHS)
    if args.arch:
        wanted = {a for item in args.arch for a in item.split(",") if a}
        unknown = wanted - set(ARCHS)
        if unknown:
            parser.error(f"unknown arch {', '.join(sorted(unknown))}; expected one of {', '.join(ARCHS)}")
        archs &= wanted
    cases = [c for c in default_cases() if c.arch in archs]
    if args.mode:
        cases = [c for c in cases if c.train == (args.mode == "train")]
    if args.filter:
        cases = [c for c in cases if args.filter in c.name]
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blasnet", default=os.path.join(REPO, ".build", "release", "blasnet"), metavar="CMD",
                        help="CLI to test; may include arguments, split like a shell would (default: %(default)s)")
    parser.add_argument("--self-test", action="store_true",
                        help="test the plumbing: use scripts/torch_cli.py (PyTorch float32) as the CLI")
    parser.add_argument("--arch", action="append", metavar="ARCH[,ARCH...]", help="only these architectures")
    parser.add_argument("--quick", action="store_true", help=f"only {' and '.join(QUICK_ARCHS)}")
    parser.add_argument("--mode", choices=("eval", "train"), help="only inference or only training cases")
    parser.add_argument("--filter", metavar="TEXT", help="only cases whose name contains TEXT")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument("--factor", type=float, default=10.0,
                        help="allowed multiple of PyTorch float32's own error (default: %(default)s)")
    parser.add_argument("--output-floor", type=float, default=1e-5,
                        help="minimum allowed error for logits/loss/running stats (default: %(default)s)")
    parser.add_argument("--grad-floor", type=float, default=1e-4,
                        help="minimum allowed error for gradients (default: %(default)s)")
    parser.add_argument("--kink-factor", type=float, default=1.0,
                        help="weight of the ReLU-kink error bound; 0 disables it (default: %(default)s)")
    parser.add_argument("--max-allowed", type=float, default=0.5,
                        help="cap on the allowed error of any tensor (default: %(default)s)")
    parser.add_argument("--max-kinks", type=int, default=64,
                        help="near-kink ReLU inputs analysed per training case (default: %(default)s)")
    parser.add_argument("--f32-realisations", type=int, default=3, metavar="N",
                        help="PyTorch float32 runs whose median error is used (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="pass --threads N to the CLI")
    parser.add_argument("--timeout", type=float, help="seconds allowed per CLI run")
    parser.add_argument("--keep", metavar="DIR", help="keep each case's weights/input/output files under DIR")
    args = parser.parse_args()

    cases = select_cases(args, parser)
    if not cases:
        print("error: no cases selected", file=sys.stderr)
        return 2
    if args.list:
        for c in cases:
            print(f"{c.name}  (seed {c.seed})")
        return 0

    if args.self_test:
        cmd = [sys.executable, os.path.join(SCRIPTS, "torch_cli.py")]
    else:
        cmd = shlex.split(args.blasnet)
        exe = cmd[0] if os.sep in cmd[0] else None
        if exe and not os.access(exe, os.X_OK):
            print(f"error: {exe} not found or not executable; build it with "
                  f"`swift build -c release` or pass --blasnet PATH (or --self-test)", file=sys.stderr)
            return 2
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)

    print(f"CLI: {shlex.join(cmd)}")
    print(f"pass: err <= min(max({args.factor:g} x torch f32 err, {args.output_floor:g} outputs / "
          f"{args.grad_floor:g} grads) + {args.kink_factor:g} x kink bound, {args.max_allowed:g})\n")
    print_header()
    results = []
    for case in cases:
        r = check_case(case, args, cmd)
        print_row(r)
        results.append(r)

    failed = [r for r in results if not r.ok]
    for r in failed:
        print_details(r)
    extras = sorted({name for r in results for name in r.extra})
    if extras:
        print(f"\nnote: the CLI wrote tensors the reference doesn't have (ignored): {', '.join(extras[:8])}"
              + (" ..." if len(extras) > 8 else ""))
    capped = [(r.case.name, t.name) for r in results for t in r.tensors if t.allowed >= args.max_allowed]
    if capped:
        cases_capped = sorted({c for c, _ in capped})
        print(f"\nnote: {len(capped)} tensors in {len(cases_capped)} cases are so ill-conditioned in float32 that "
              f"only errors above {args.max_allowed:g} are caught: {'; '.join(cases_capped)}")
    print(f"\n{len(results) - len(failed)}/{len(results)} cases passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
