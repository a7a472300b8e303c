"""Benchmark `blasnet bench` against PyTorch on the same models, weights and data.

Usually run through scripts/compare-pytorch, which provides the virtualenv
(`--python PATH` selects another interpreter with torch, torchvision, timm,
safetensors and numpy).

For every case this
  * builds the PyTorch model (torch_models.build: torchvision ResNets, timm
    SE-ResNets) with torch's default initialisation under a fixed seed and
    saves its state_dict, plus a seeded random batch (`input` F32 [N,C,H,W],
    `target` I64 [N]), to a temporary directory;
  * runs `blasnet bench --json` on those files, and the same step in
    PyTorch (this script re-run with --torch-worker), each in its own
    process, alternating the two frameworks --rounds times (the order
    flips every round so slow drift, e.g. thermal, hits both equally);
  * reports per framework the median over the rounds of images/s and of
    peak RSS, plus BLASNet's GEMM efficiency;
  * checks the losses of the first training step (before any update) and of
    the second (the same batch after one SGD update, so that backward and
    the optimizer are checked too) against PyTorch run once more in float64.

The loss check follows scripts/check-parity: BLASNet's relative error
against the float64 losses must be at most max(LOSS_FACTOR x PyTorch
float32's own error, --loss-tolerance).  A direct float32-to-float32
comparison would not do for the second step: in a deep network at torch's
default initialisation (every BatchNorm gamma 1) an SGD step amplifies
float32 rounding, and PyTorch's own float32 second-step loss is off its
float64 one by up to about 1e-2.

A step is timed identically on both sides: --warmup untimed steps, then
--steps timed steps, of which the median (the mean of the two middle ones
for an even count, as blasnet does) is reported.  A training step is forward, mean cross-entropy,
backward and an SGD update (lr 0.01, momentum 0.9, weight decay 1e-4) in
training mode (batch-statistics BatchNorm); inference is an eval-mode
forward that keeps nothing for a backward pass (PyTorch: model.eval() under
torch.inference_mode(); BLASNet: eval() inside withoutGradients).  PyTorch runs
with torch.set_num_threads(--threads) (and OMP/MKL_NUM_THREADS), BLASNet with
`--threads`.  Note that after the timed steps `blasnet bench` also runs
--steps profiled steps, each followed by a replay of its sgemm calls alone
(for the GEMM efficiency); those are not in the images/s, but they make a
BLASNet run take longer than its steps alone.

Peak RSS is each child's own VmHWM (/proc/self/status), which both
frameworks report in their JSON, measured the same way for both.  Not
ru_maxrss: Linux carries the high-water mark of the address space a child
replaced at exec into it, so every child of this driver (which has torch
loaded) would report at least the driver's memory.  The PyTorch figure
includes the Python interpreter and the torch/torchvision/timm libraries
(rss_before_steps_bytes in the JSON shows how much was resident before the
first step).

Exit status: 0 if every run succeeded and every first- and second-step loss passed,
1 otherwise, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(SCRIPTS)
DEFAULT_BLASNET = os.path.join(REPO, ".build", "release", "blasnet")
sys.path.insert(0, SCRIPTS)

MODES = ("train", "inference")
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4  # must match `blasnet bench`
MiB = 1024 * 1024
# The losses compared, by their key in both workers' JSON: before any update, and on the
# same batch after one SGD update.
LOSSES = {"first_loss": "first-step", "second_loss": "second-step"}
LOSS_FACTOR = 10.0  # as scripts/check-parity's --factor


@dataclasses.dataclass(frozen=True)
class Case:
    label: str  # shown in the "case" column; the same for both modes of a model
    arch: str
    stem: str
    in_chans: int
    num_classes: int
    height: int
    width: int
    batch: int
    mode: str

    @property
    def name(self) -> str:
        return f"{self.label}-{self.mode}"

    @property
    def input_desc(self) -> str:
        return f"{self.in_chans}x{self.height}x{self.width}"


def default_cases() -> list[Case]:
    cases = []
    for arch in ("resnet50", "seresnet50"):
        for mode in MODES:
            cases.append(Case(arch, arch, "imagenet", 3, 1000, 224, 224, 16, mode))
    for mode in MODES:
        cases.append(Case("resnet18", "resnet18", "imagenet", 3, 1000, 224, 224, 32, mode))
    for mode in MODES:
        cases.append(Case("seresnet18-cifar", "seresnet18", "cifar", 1, 10, 28, 28, 128, mode))
    return cases


def parse_custom(spec: str) -> Case:
    """ARCH,STEM,H,W,C,BATCH,MODE[,CLASSES] -> Case (classes: 10 for cifar, else 1000)."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) not in (7, 8):
        raise argparse.ArgumentTypeError(f"--custom needs ARCH,STEM,H,W,C,BATCH,MODE[,CLASSES], got {spec!r}")
    arch, stem = parts[0], parts[1]
    try:
        h, w, c, batch = (int(p) for p in parts[2:6])
        classes = int(parts[7]) if len(parts) == 8 else (10 if stem == "cifar" else 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--custom: H, W, C, BATCH and CLASSES must be integers in {spec!r}") from None
    mode = parts[6]
    if stem not in ("imagenet", "cifar"):
        raise argparse.ArgumentTypeError(f"--custom: stem must be imagenet or cifar, got {stem!r}")
    if mode not in MODES:
        raise argparse.ArgumentTypeError(f"--custom: mode must be train or inference, got {mode!r}")
    if min(h, w, c, batch, classes) <= 0:
        raise argparse.ArgumentTypeError(f"--custom: sizes must be positive in {spec!r}")
    if mode == "train" and batch < 2:
        raise argparse.ArgumentTypeError("--custom: training needs a batch of at least 2 (BatchNorm)")
    label = f"{arch}-{stem}-{c}x{h}x{w}" + (f"-k{classes}" if len(parts) == 8 else "")
    return Case(label, arch, stem, c, classes, h, w, batch, mode)


def median_step(samples: list[float]) -> float:
    """The same median `blasnet bench` reports (the mean of the middle two for even counts)."""
    return statistics.median(samples)


def rel_diff(a: float, b: float) -> float:
    """|a - b| / |b| (b is the reference)."""
    if b == 0:
        return 0.0 if a == 0 else math.inf
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------
# PyTorch side (runs in its own process: `compare_pytorch.py --torch-worker ...`)
# --------------------------------------------------------------------------

def torch_worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="compare_pytorch.py --torch-worker")
    p.add_argument("--arch", required=True)
    p.add_argument("--stem", required=True)
    p.add_argument("--in-chans", type=int, required=True)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float64: the reference losses (the timings mean nothing then)")
    a = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from torch_models import build

    torch.set_num_threads(a.threads)
    model = build(a.arch, a.num_classes, a.in_chans, a.stem)
    model.load_state_dict(load_file(a.weights), strict=True)
    dtype = getattr(torch, a.dtype)
    model.to(dtype)
    data = load_file(a.data)
    x, target = data["input"].to(dtype).contiguous(), data["target"].to(torch.int64)
    train = a.mode == "train"
    losses: list[float] = []

    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

        def step() -> None:
            logits = model(x)
            loss = F.cross_entropy(logits, target)  # mean reduction
            if len(losses) < 2:
                losses.append(loss.item())  # before any update, then after one
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(x)

    rss_before = peak_rss_bytes()
    for _ in range(a.warmup):
        step()
    samples = []
    for _ in range(a.steps):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    step_seconds = median_step(samples)
    batch = x.shape[0]
    print(json.dumps({
        "arch": a.arch, "stem": a.stem, "mode": a.mode, "batch": batch, "input": list(x.shape[2:]),
        "first_loss": losses[0] if losses else None,
        "second_loss": losses[1] if len(losses) > 1 else None,
        "threads": torch.get_num_threads(),
        "step_seconds": step_seconds, "step_seconds_samples": samples,
        "images_per_second": batch / step_seconds,
        "rss_before_steps_bytes": rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
    }))
    return 0


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    framework: str  # "pytorch" | "blasnet" | "reference" (PyTorch in float64, once per training case)
    round: int
    argv: list[str]
    wall_seconds: float
    peak_rss_bytes: int  # the child's own VmHWM from its report (wait4's ru_maxrss if it has none)
    report: dict | None  # the run's own JSON
    error: str = ""


def peak_rss_bytes() -> int:
    """This process's VmHWM (see the module docstring for why not ru_maxrss)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(argv: list[str], env: dict[str, str] | None, timeout: float | None, workdir: str
              ) -> tuple[int, int, float, str, str, bool]:
    """Run argv; returns (exit code, ru_maxrss bytes of that child, wall s, stdout, stderr, timed out).

    wait4() gives the resource usage of exactly this child, unlike
    getrusage(RUSAGE_CHILDREN), which is the maximum over all children so far.
    """
    out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
    timed_out = threading.Event()
    with open(out_path, "w+") as out, open(err_path, "w+") as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return proc.returncode, usage.ru_maxrss * 1024, wall, out.read(), err.read(), timed_out.is_set()


def parse_report(stdout: str) -> dict:
    start = stdout.find("{")
    if start < 0:
        raise ValueError("no JSON object in the output")
    report = json.loads(stdout[start:])
    # blasnet writes a loss that diverged as the string "NaN" or "Infinity".
    for key in LOSSES:
        if isinstance(report.get(key), str):
            report[key] = float(report[key])
    return report


def run_framework(framework: str, case: Case, rnd: int, files: tuple[str, str], args: argparse.Namespace,
                  blasnet: str, workdir: str) -> Run:
    weights, data = files
    if framework == "blasnet":
        argv = [blasnet, "bench", "--arch", case.arch, "--stem", case.stem, "--in-chans", str(case.in_chans),
                "--num-classes", str(case.num_classes), "--batch", str(case.batch),
                "--input", str(case.height), str(case.width), "--threads", str(args.threads),
                "--mode", case.mode, "--warmup", str(args.warmup), "--steps", str(args.steps),
                "--weights", weights, "--data", data, "--conv-algorithm", args.conv_algorithm, "--json"]
        env = None
    else:
        # The reference makes exactly the two steps whose losses are checked.
        warmup, steps = (0, 2) if framework == "reference" else (args.warmup, args.steps)
        argv = [sys.executable, os.path.abspath(__file__), "--torch-worker", "--arch", case.arch,
                "--stem", case.stem, "--in-chans", str(case.in_chans), "--num-classes", str(case.num_classes),
                "--mode", case.mode, "--threads", str(args.threads), "--warmup", str(warmup),
                "--steps", str(steps), "--weights", weights, "--data", data,
                "--dtype", "float64" if framework == "reference" else "float32"]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    code, rss, wall, out, err, timed_out = run_child(argv, env, args.timeout, workdir)
    run = Run(framework, rnd, argv, wall, rss, None)
    if timed_out:
        run.error = f"timed out after {args.timeout:g}s"
    elif code != 0:
        tail = (err or out).strip().splitlines()[-5:]
        run.error = f"exit status {code}\n    " + "\n    ".join(tail)
    else:
        try:
            run.report = parse_report(out)
            run.peak_rss_bytes = run.report.get("peak_rss_bytes") or rss
        except ValueError as e:
            run.error = f"unreadable output ({e}): {out.strip()[:200]!r}"
    if run.error:
        run.error += f"\n    command: {shlex.join(argv)}"
    return run


def write_case_files(case: Case, seed: int, directory: str) -> tuple[str, str]:
    """Weights (torch default init under `seed`) and a seeded random batch."""
    import torch
    from safetensors.torch import save_file
    from torch_models import build

    torch.manual_seed(seed)
    model = build(case.arch, case.num_classes, case.in_chans, case.stem)
    weights_path = os.path.join(directory, "weights.safetensors")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, weights_path)
    del model
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(case.batch, case.in_chans, case.height, case.width, generator=g, dtype=torch.float32)
    target = torch.randint(0, case.num_classes, (case.batch,), generator=g, dtype=torch.int64)
    data_path = os.path.join(directory, "data.safetensors")
    save_file({"input": x, "target": target}, data_path)
    return weights_path, data_path


@dataclasses.dataclass
class CaseResult:
    case: Case
    runs: list[Run] = dataclasses.field(default_factory=list)
    error: str = ""

    def ok_runs(self, framework: str) -> list[Run]:
        return [r for r in self.runs if r.framework == framework and r.report is not None]

    def median(self, framework: str, key) -> float | None:
        vals = [key(r) for r in self.ok_runs(framework)]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def images_per_second(self, framework: str) -> float | None:
        # Recomputed from the reported batch and median step time (the same definition on both sides).
        return self.median(framework, lambda r: r.report["batch"] / r.report["step_seconds"])

    def peak_rss(self, framework: str) -> float | None:
        return self.median(framework, lambda r: r.peak_rss_bytes)

    def gemm_efficiency(self) -> float | None:
        return self.median("blasnet", lambda r: r.report.get("gemm_efficiency"))

    def reference_loss(self, key: str) -> float | None:
        """The float64 reference value of a LOSSES key."""
        return next((r.report.get(key) for r in self.ok_runs("reference")), None)

    def losses(self, key: str) -> list[tuple[int, float, float]]:
        """(round, pytorch, blasnet) values of a LOSSES key, in the rounds where both have one."""
        torch_by_round = {r.round: r.report.get(key) for r in self.ok_runs("pytorch")}
        pairs = []
        for r in self.ok_runs("blasnet"):
            t, b = torch_by_round.get(r.round), r.report.get(key)
            if t is not None and b is not None:
                pairs.append((r.round, t, b))
        return pairs

    def loss_errors(self, key: str) -> tuple[float, float] | None:
        """(BLASNet's, PyTorch float32's) largest relative error over the rounds against the
        float64 reference, for one LOSSES key; None without a reference or a pair."""
        ref, pairs = self.reference_loss(key), self.losses(key)
        if ref is None or not pairs:
            return None
        # max() passes over a NaN after the first element: a diverged round must not.
        ours, theirs = [rel_diff(b, ref) for _, _, b in pairs], [rel_diff(t, ref) for _, t, _ in pairs]
        return tuple(max(e) if all(math.isfinite(x) for x in e) else math.inf for e in (ours, theirs))

    def loss_ok(self, tolerance: float) -> bool | None:
        """True/False for training cases, None for inference. A training case whose losses
        cannot be checked (no reference, or a step missing) fails."""
        if self.case.mode != "train":
            return None
        errors = [self.loss_errors(key) for key in LOSSES]
        if any(e is None for e in errors):
            return False
        return all(ours <= max(LOSS_FACTOR * theirs, tolerance) for ours, theirs in errors)

    @property
    def failed(self) -> bool:
        return bool(self.error) or any(r.error for r in self.runs)

    def summary(self, tolerance: float) -> dict:
        t_ips, b_ips = self.images_per_second("pytorch"), self.images_per_second("blasnet")
        return {
            "pytorch_images_per_second": t_ips, "blasnet_images_per_second": b_ips,
            "ratio_blasnet_over_pytorch": b_ips / t_ips if t_ips and b_ips else None,
            "pytorch_step_seconds": self.median("pytorch", lambda r: r.report["step_seconds"]),
            "blasnet_step_seconds": self.median("blasnet", lambda r: r.report["step_seconds"]),
            "pytorch_peak_rss_bytes": self.peak_rss("pytorch"), "blasnet_peak_rss_bytes": self.peak_rss("blasnet"),
            "blasnet_gemm_efficiency": self.gemm_efficiency(),
            **{key + "es": [{"round": r, "pytorch": t, "blasnet": b} for r, t, b in self.losses(key)] for key in LOSSES},
            **{key + "_float64": self.reference_loss(key) for key in LOSSES},
            **{key + "_errors": dict(zip(("blasnet", "pytorch"), e)) if (e := self.loss_errors(key)) else None
               for key in LOSSES},
            "loss_ok": self.loss_ok(tolerance),
            "failed": self.failed,
        }


def run_case(case: Case, args: argparse.Namespace, blasnet: str, root: str) -> CaseResult:
    result = CaseResult(case)
    directory = tempfile.mkdtemp(prefix=case.name + "-", dir=root)
    try:
        log(f"[{case.name}] writing weights and data ({case.arch}, {case.stem} stem, "
            f"batch {case.batch}x{case.input_desc}, {case.num_classes} classes)")
        try:
            files = write_case_files(case, args.seed, directory)
        except Exception as e:  # noqa: BLE001 - e.g. an unknown arch: fail this case, keep going
            result.error = f"cannot build {case.arch}: {type(e).__name__}: {e}"
            log(f"[{case.name}] FAILED: {result.error}")
            return result
        for rnd in range(args.rounds):
            order = ("blasnet", "pytorch") if rnd % 2 == 0 else ("pytorch", "blasnet")
            for framework in order:
                run = run_framework(framework, case, rnd, files, args, blasnet, directory)
                result.runs.append(run)
                if run.error:
                    log(f"[{case.name}] round {rnd + 1}/{args.rounds} {framework}: FAILED: {run.error}")
                    return result  # a failing run will fail again; go on with the next case
                rep = run.report
                loss, second = rep.get("first_loss"), rep.get("second_loss")
                log(f"[{case.name}] round {rnd + 1}/{args.rounds} {framework:<7}: "
                    f"{rep['batch'] / rep['step_seconds']:8.2f} images/s, step {rep['step_seconds'] * 1000:8.1f} ms, "
                    f"peak RSS {run.peak_rss_bytes / MiB:7.0f} MiB"
                    + (f", first loss {loss:.7g}" if loss is not None else "")
                    + (f", second {second:.7g}" if second is not None else "")
                    + (f", threads {rep.get('threads')}" if rep.get("threads") != args.threads else "")
                    + f"  ({run.wall_seconds:.1f} s)")
        if case.mode == "train":
            log(f"[{case.name}] reference losses: PyTorch in float64, two steps")
            run = run_framework("reference", case, 0, files, args, blasnet, directory)
            result.runs.append(run)
            if run.error:
                log(f"[{case.name}] reference: FAILED: {run.error}")
                return result
            for key, step in LOSSES.items():
                errors = result.loss_errors(key)
                if errors:
                    log(f"[{case.name}] {step} loss, relative error against float64: "
                        f"BLASNet {errors[0]:.2e}, PyTorch float32 {errors[1]:.2e}  ({run.wall_seconds:.1f} s)")
            verdict = "ok" if result.loss_ok(args.loss_tolerance) else "MISMATCH"
            log(f"[{case.name}] losses: {verdict}")
        return result
    finally:
        if args.keep_files:
            log(f"[{case.name}] files kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- machine facts ---------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        info = ""
    for key in ("model name", "Hardware", "cpu model", "Processor", "uarch"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if m:
            return m.group(1).strip()
    import platform
    return platform.processor() or platform.machine() or "unknown"


def machine_facts(results: list[CaseResult]) -> dict:
    import torch
    blas = next((r.report for res in results for r in res.ok_runs("blasnet")), None) or {}
    config = torch.__config__.show()
    m = re.search(r"BLAS_INFO=([^,\s]+)", config)
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "openblas_core": blas.get("openblas_core"),
        "openblas_config": blas.get("openblas_config"),
        "torch_version": torch.__version__,
        "torch_mkldnn_available": torch.backends.mkldnn.is_available(),
        "torch_mkl_available": torch.backends.mkl.is_available(),
        "torch_blas": m.group(1) if m else None,
        "python": sys.version.split()[0],
    }


def facts_lines(f: dict, args: argparse.Namespace) -> list[str]:
    return [
        f"CPU: {f['cpu_model']} ({f['logical_cpus']} logical CPUs); {args.threads} threads per framework",
        f"BLASNet convolutions: --conv-algorithm {args.conv_algorithm}",
        f"BLASNet: OpenBLAS {f['openblas_core'] or '?'} ({f['openblas_config'] or '?'})",
        f"PyTorch: {f['torch_version']}, mkldnn (oneDNN) available: {f['torch_mkldnn_available']}, "
        f"MKL available: {f['torch_mkl_available']}, BLAS: {f['torch_blas'] or '?'}",
        f"Timing: median of {args.steps} step(s) after {args.warmup} warm-up step(s), median over {args.rounds} "
        f"alternating round(s); seed {args.seed}",
    ]


# ---- table -----------------------------------------------------------------

HEADERS = ["case", "mode", "batch", "input", "PyTorch img/s", "BLASNet img/s", "BLASNet/PyTorch",
           "PyTorch RSS MiB", "BLASNet RSS MiB", "GEMM eff", "loss error, steps 1, 2 (PyTorch's)"]
RIGHT = {2, 4, 5, 6, 7, 8, 9}


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def fmt_ips(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def table_rows(results: list[CaseResult], tolerance: float) -> list[list[str]]:
    rows = []
    for res in results:
        c, s = res.case, res.summary(tolerance)
        if c.mode != "train":
            loss = "n/a"
        elif not all(res.loss_errors(key) for key in LOSSES):
            loss = "-"
        else:
            loss = ("ok " if s["loss_ok"] else "MISMATCH ") + ", ".join(
                "{:.0e} ({:.0e})".format(*res.loss_errors(key)) for key in LOSSES)
        row = [c.label, c.mode, str(c.batch), c.input_desc, fmt_ips(s["pytorch_images_per_second"]),
               fmt_ips(s["blasnet_images_per_second"]), fmt(s["ratio_blasnet_over_pytorch"], ".2f"),
               fmt(s["pytorch_peak_rss_bytes"] and s["pytorch_peak_rss_bytes"] / MiB, ".0f"),
               fmt(s["blasnet_peak_rss_bytes"] and s["blasnet_peak_rss_bytes"] / MiB, ".0f"),
               fmt(s["blasnet_gemm_efficiency"], ".2f"), loss]
        if res.failed:
            row[-1] = "FAILED" if loss in ("-", "n/a") else row[-1] + " (FAILED)"
        rows.append(row)
    return rows


def render_plain(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(HEADERS), line(["-" * w for w in widths])] + [line(r) for r in rows])


def render_markdown(rows: list[list[str]]) -> str:
    sep = ["---:" if i in RIGHT else "---" for i in range(len(HEADERS))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [HEADERS, sep] + rows)


# ---- main ------------------------------------------------------------------

def ensure_blasnet(path: str | None) -> str:
    if path:
        if not os.access(path, os.X_OK):
            raise SystemExit(f"error: --blasnet {path}: not an executable file")
        return path
    # Always: an incremental build is quick, and a stale binary would time old code.
    log("swift build -c release --product blasnet")
    proc = subprocess.run(["swift", "build", "-c", "release", "--product", "blasnet"], cwd=REPO,
                          stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0 or not os.access(DEFAULT_BLASNET, os.X_OK):
        raise SystemExit("error: swift build -c release failed")
    return DEFAULT_BLASNET


def select_cases(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Case]:
    defaults = default_cases()
    cases: list[Case] = []
    for name in args.case or []:
        chosen = [c for c in defaults if name in (c.name, c.label)]
        if not chosen:
            names = sorted({c.label for c in defaults} | {c.name for c in defaults})
            parser.error(f"unknown --case {name!r}; choose from {', '.join(names)}")
        cases += [c for c in chosen if c not in cases]
    cases += args.custom or []
    return cases if cases else defaults


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-worker":
        return torch_worker(sys.argv[2:])

    parser = argparse.ArgumentParser(
        prog="scripts/compare-pytorch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Default cases: " + ", ".join(c.name for c in default_cases())
        + ".  Example smoke test: scripts/compare-pytorch --custom seresnet18,cifar,28,28,1,8,train --quick")
    parser.add_argument("--case", action="append", metavar="NAME",
                        help="run only this default case (repeatable); NAME is a case (e.g. resnet50) "
                             "for both its modes, or case-mode (e.g. resnet50-inference)")
    parser.add_argument("--custom", action="append", type=parse_custom, metavar="ARCH,STEM,H,W,C,BATCH,MODE[,CLASSES]",
                        help="an extra case (repeatable), e.g. seresnet18,cifar,28,28,1,8,train; CLASSES defaults to "
                             "10 for the cifar stem, else 1000.  With --custom and no --case, only the custom cases run")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument("--threads", type=int, default=2, help="threads for both frameworks (default 2)")
    parser.add_argument("--conv-algorithm", choices=("automatic", "winograd", "winograd4x4", "im2col"), default="automatic",
                        help="BLASNet's 3x3 stride-1 convolutions (blasnet bench --conv-algorithm; default automatic)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per case (default 3; --quick: 1)")
    parser.add_argument("--warmup", type=int, help="untimed steps per run (default 1; --quick: 1)")
    parser.add_argument("--steps", type=int, help="timed steps per run, median reported (default 5; --quick: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round, 1 warm-up, 2 steps (explicit --rounds/--warmup/--steps win)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and data (default 0)")
    parser.add_argument("--loss-tolerance", type=float, default=1e-4,
                        help="relative error against the float64 losses always allowed, whatever PyTorch float32's own (default 1e-4)")
    parser.add_argument("--json", metavar="PATH", help="also save every raw number (all runs, per-layer data) here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    parser.add_argument("--blasnet", metavar="PATH",
                        help="blasnet binary (default .build/release/blasnet, brought up to date with swift build -c release first)")
    parser.add_argument("--timeout", type=float, help="kill a run after this many seconds (default: no limit)")
    parser.add_argument("--keep-files", action="store_true", help="keep the weights/data files and print where")
    args = parser.parse_args()

    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else 1
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 5)
    if args.threads <= 0 or args.rounds <= 0 or args.steps <= 0 or args.warmup < 0:
        parser.error("--threads, --rounds and --steps must be positive and --warmup non-negative")
    if args.warmup + args.steps < 2:
        parser.error("--warmup plus --steps must be at least 2: the second step's loss is checked")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")

    cases = select_cases(args, parser)
    if args.list:
        for c in cases:
            print(f"{c.name:<32} {c.arch} {c.stem} stem, batch {c.batch}, input {c.input_desc}, "
                  f"{c.num_classes} classes, {c.mode}")
        return 0

    blasnet = ensure_blasnet(args.blasnet)
    start = time.monotonic()
    results = []
    root = tempfile.mkdtemp(prefix="compare-pytorch-")
    try:
        for case in cases:
            results.append(run_case(case, args, blasnet, root))
    finally:
        if not args.keep_files:
            shutil.rmtree(root, ignore_errors=True)
    log(f"done in {time.monotonic() - start:.0f} s")

    facts = machine_facts(results)
    rows = table_rows(results, args.loss_tolerance)
    lines = facts_lines(facts, args)
    if args.markdown:
        print("\n".join("- " + line for line in lines))
        print()
        print(render_markdown(rows))
    else:
        print("\n".join(lines))
        print()
        print(render_plain(rows))

    notes = []
    for res in results:
        for key, step in LOSSES.items():
            ref, pairs = res.reference_loss(key), res.losses(key)
            # Deterministic runs give every round the same losses: one line then.
            same = len({(t, b) for _, t, b in pairs}) == 1
            for rnd, t, b in pairs[:1] if same else pairs:
                rounds = f"all {len(pairs)} rounds" if same else f"round {rnd + 1}"
                notes.append(f"{res.case.name} {rounds}: {step} loss BLASNet {b:.7g}, PyTorch {t:.7g}"
                             + (f", float64 {ref:.7g}" if ref is not None else ""))
        if res.loss_ok(args.loss_tolerance) is False:
            notes.append(f"{res.case.name}: loss MISMATCH: BLASNet's error against float64 above "
                         f"max({LOSS_FACTOR:g} x PyTorch float32's, {args.loss_tolerance:g}), or a loss missing")
        if res.error:
            notes.append(f"{res.case.name}: FAILED: {res.error}")
        notes += [f"{res.case.name} round {r.round + 1} {r.framework}: FAILED: {r.error}" for r in res.runs if r.error]
    if notes:
        print()
        print("\n".join(("- " if args.markdown else "") + n for n in notes))

    if args.json:
        payload = {
            "machine": facts,
            "settings": {k: getattr(args, k) for k in ("threads", "conv_algorithm", "rounds", "warmup", "steps", "seed",
                                                       "loss_tolerance")}
            | {"lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "blasnet": blasnet},
            "cases": [{"case": dataclasses.asdict(res.case) | {"name": res.case.name},
                       "summary": res.summary(args.loss_tolerance), "error": res.error,
                       "runs": [dataclasses.asdict(r) for r in res.runs]} for res in results],
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        log(f"raw numbers saved to {args.json}")

    bad = any(res.failed or res.loss_ok(args.loss_tolerance) is False for res in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
