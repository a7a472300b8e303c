"""Generate the PyTorch reference fixture for the optimizer, schedule and loss tests.

Usually run through scripts/make-optim-fixtures, which provides the virtualenv.

Optimizers: three small parameters (shapes PARAM_SHAPES) and a fixed gradient for
each of STEPS steps (no model: the gradients are data, so every scenario sees the
same ones).  Each step's gradient is scaled by GRAD_SCALES, whose ups and downs make
the AMSGrad maximum differ from the running second moment.  Each scenario runs a
torch.optim optimizer (single-tensor implementation, foreach=False) in float32, with
its learning rate set by a scheduler, exactly as a training loop would:

    for step in range(STEPS):
        <set .grad, or None for a parameter frozen at this step>
        lrs.append(optimizer.param_groups[0]["lr"]); optimizer.step(); scheduler.step()

A parameter listed in a scenario's "frozen_until" has no gradient (requires_grad
False) before that step, so its optimizer state starts later than the others'.

The schedule of a scenario is written in BLASNet's command-line form
(LearningRateSchedule.Kind(parsing:)), "kind[:option=value,...]", and maps to:
    constant                                  no scheduler
    step:every=N,gamma=G                      StepLR(step_size=N, gamma=G)
    cosine:minimum=M                          CosineAnnealingLR(T_max=steps, eta_min=M)
    onecycle:pct-start=P[,div-factor=D,...]   OneCycleLR(max_lr=lr, total_steps=steps,
                                              pct_start=P, anneal_strategy="cos",
                                              cycle_momentum=False)
where steps = STEPS - warmup_steps; with warmup_steps > 0 it follows
LinearLR(start_factor=warmup_start_factor, total_iters=warmup_steps) in a SequentialLR.

Cross-entropy: CE_LOGITS ([6, 5], float32, one row of logits near +-90 so that
an implementation without the max subtraction overflows) against CE_TARGET, for each
label smoothing in CE_SMOOTHING, computed in float64 from the float32 logits.

Focal loss: the same logits against FOCAL_TARGET, for each case of FOCAL_CASES (gamma,
and alpha as one weight for all classes or a list of one per class), in float64 by
autograd from log-softmax: mean over rows of -alpha_t * (1 - p_t)**gamma * log p_t, with
1 - p_t = -expm1(log p_t).  FOCAL_TARGET differs from CE_TARGET in the large row, whose
CE target has p_t = 1 in float64: there autograd's d/dq q**gamma = inf for gamma < 1
makes the reference NaN (the true gradient is 0, which the Swift tests check by themselves).

Keys (float32 unless noted):
  param.<i>                 initial value of parameter i
  grad.<i>                  [STEPS, *shape]  gradient of parameter i at each step
  <scenario>.lr             float64 [STEPS]  learning rate used by each step
  <scenario>.param.<i>      [STEPS, *shape]  parameter i after each step
  ce.logits, ce.target      float32 [6, 5], int64 [6]
  ce.<j>.loss, ce.<j>.grad  [], [6, 5]       mean loss and its gradient for CE_SMOOTHING[j]
  focal.target              int64 [6]
  focal.<j>.loss, focal.<j>.grad  [], [6, 5] mean focal loss and its gradient for FOCAL_CASES[j]
Metadata:
  torch, steps, ce_label_smoothing (JSON list), focal_cases (JSON list)
  scenarios   JSON {name: {"optimizer": {...torch keyword arguments, "name": sgd|adamw},
              "schedule": str, "warmup_steps": int, "warmup_start_factor": float,
              "frozen_until": {param index: step}}}
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

STEPS = 8
PARAM_SHAPES = [(4, 6), (6,), (2, 3, 5)]
GRAD_SCALES = [1.0, 0.3, 2.0, 0.05, 1.5, 0.5, 3.0, 0.1]
CE_SMOOTHING = [0.0, 0.1, 0.25, 1.0]
CE_TARGET = [0, 4, 2, 2, 1, 3]
FOCAL_TARGET = [0, 4, 2, 0, 1, 3]
FOCAL_CASES = [
    {"gamma": 0.0, "alpha": 1.0},                          # cross-entropy
    {"gamma": 2.0, "alpha": 0.25},                         # the paper's
    {"gamma": 0.5, "alpha": 0.25},                         # gamma < 1: (1 - p)**(gamma - 1) is unbounded
    {"gamma": 2.0, "alpha": [0.1, 0.4, 0.25, 1.0, 0.6]},   # a weight per class
]
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                           "Tests", "BLASNetTests", "Fixtures", "optimizers.safetensors")

SCENARIOS = {
    "sgd_plain": {
        "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 1e-3},
        "schedule": "constant"},
    "sgd_momentum_step": {
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2},
        "schedule": "step:every=3,gamma=0.5"},
    "sgd_nesterov_cosine": {
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": "cosine:minimum=0.001"},
    "sgd_dampening_warmup_step": {
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.8, "dampening": 0.1},
        "schedule": "step:every=2,gamma=0.7", "warmup_steps": 3, "warmup_start_factor": 0.25,
        "frozen_until": {"2": 3}},
    "adamw_default": {
        "optimizer": {"name": "adamw"},
        "schedule": "constant"},
    "adamw_onecycle": {
        "optimizer": {"name": "adamw", "lr": 0.02, "weight_decay": 0.05},
        "schedule": "onecycle:pct-start=0.25"},
    "adamw_amsgrad_warmup_cosine": {
        "optimizer": {"name": "adamw", "lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1,
                      "amsgrad": True},
        "schedule": "cosine:minimum=0.0001", "warmup_steps": 3, "warmup_start_factor": 0.1,
        "frozen_until": {"1": 2}},
}


def make_optimizer(params: list[torch.Tensor], config: dict) -> torch.optim.Optimizer:
    kwargs = {k: v for k, v in config.items() if k != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if config["name"] == "sgd":
        return torch.optim.SGD(params, foreach=False, **kwargs)
    return torch.optim.AdamW(params, foreach=False, **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, scenario: dict) -> torch.optim.lr_scheduler.LRScheduler:
    name, _, option_text = scenario["schedule"].partition(":")
    options = {k: float(v) for k, v in (item.split("=") for item in option_text.split(",") if item)}
    warmup = scenario.get("warmup_steps", 0)
    steps = STEPS - warmup
    sched = torch.optim.lr_scheduler
    if name == "constant":
        main = sched.LambdaLR(optimizer, lambda _: 1.0)
    elif name == "step":
        main = sched.StepLR(optimizer, step_size=int(options["every"]), gamma=options.get("gamma", 0.1))
    elif name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=steps, eta_min=options.get("minimum", 0.0))
    elif name == "onecycle":
        main = sched.OneCycleLR(optimizer, max_lr=optimizer.defaults["lr"], total_steps=steps,
                                pct_start=options.get("pct-start", 0.3), div_factor=options.get("div-factor", 25.0),
                                final_div_factor=options.get("final-div-factor", 1e4),
                                anneal_strategy="cos", cycle_momentum=False, three_phase=False)
    else:
        raise ValueError(f"unknown schedule {name}")
    if warmup == 0:
        return main
    linear = sched.LinearLR(optimizer, start_factor=scenario["warmup_start_factor"], end_factor=1.0,
                            total_iters=warmup)
    return sched.SequentialLR(optimizer, [linear, main], milestones=[warmup])


def run_scenario(scenario: dict, initial: list[torch.Tensor], grads: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    params = [p.clone().requires_grad_(True) for p in initial]
    optimizer = make_optimizer(params, scenario["optimizer"])
    scheduler = make_scheduler(optimizer, scenario)
    frozen_until = {int(k): v for k, v in scenario.get("frozen_until", {}).items()}
    lrs, history = [], [[] for _ in params]
    for step in range(STEPS):
        for i, p in enumerate(params):
            p.grad = None if step < frozen_until.get(i, 0) else grads[i][step].clone()
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        for i, p in enumerate(params):
            history[i].append(p.detach().clone())
    return torch.tensor(lrs, dtype=torch.float64), [torch.stack(h) for h in history]


def loss_entries() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(len(CE_TARGET), 5, generator=g, dtype=torch.float32) * 3
    logits[3] *= 30
    target = torch.tensor(CE_TARGET, dtype=torch.int64)
    focal_target = torch.tensor(FOCAL_TARGET, dtype=torch.int64)
    entries = {"ce.logits": logits, "ce.target": target, "focal.target": focal_target}

    def record(key: str, loss_of) -> None:
        x = logits.to(torch.float64).requires_grad_(True)
        loss = loss_of(x)
        loss.backward()
        entries[f"{key}.loss"] = loss.detach().to(torch.float32)
        entries[f"{key}.grad"] = x.grad.to(torch.float32)

    def focal(x: torch.Tensor, gamma: float, alpha: float | list[float]) -> torch.Tensor:
        log_p = F.log_softmax(x, dim=1).gather(1, focal_target[:, None])[:, 0]
        alpha_t = torch.tensor(alpha, dtype=torch.float64)[focal_target] if isinstance(alpha, list) else alpha
        return (-alpha_t * (-torch.expm1(log_p)) ** gamma * log_p).mean()

    for j, eps in enumerate(CE_SMOOTHING):
        record(f"ce.{j}", lambda x: F.cross_entropy(x, target, label_smoothing=eps))
    for j, case in enumerate(FOCAL_CASES):
        record(f"focal.{j}", lambda x: focal(x, case["gamma"], case["alpha"]))
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="fixture file (default: %(default)s)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    initial = [torch.randn(shape, generator=g, dtype=torch.float32) for shape in PARAM_SHAPES]
    grads = [torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) * s for s in GRAD_SCALES])
             for shape in PARAM_SHAPES]

    tensors: dict[str, torch.Tensor] = {}
    for i, (p, grad) in enumerate(zip(initial, grads)):
        tensors[f"param.{i}"] = p
        tensors[f"grad.{i}"] = grad
    for name, scenario in SCENARIOS.items():
        lrs, history = run_scenario(scenario, initial, grads)
        tensors[f"{name}.lr"] = lrs
        for i, h in enumerate(history):
            tensors[f"{name}.param.{i}"] = h
    tensors.update(loss_entries())

    metadata = {
        "torch": torch.__version__,
        "steps": str(STEPS),
        "scenarios": json.dumps(SCENARIOS, sort_keys=True),
        "ce_label_smoothing": json.dumps(CE_SMOOTHING),
        "focal_cases": json.dumps(FOCAL_CASES),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, args.out, metadata=metadata)
    os.chmod(args.out, 0o644)  # safetensors writes 0600; this is an ordinary repo file
    print(f"{os.path.relpath(args.out)}: {len(SCENARIOS)} optimizer scenarios x {STEPS} steps, "
          f"{len(CE_SMOOTHING)} label smoothings, {len(FOCAL_CASES)} focal losses, {len(tensors)} tensors, {os.path.getsize(args.out) / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
