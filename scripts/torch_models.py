"""PyTorch reference models and reference computations for BLASNet.

Both model families keep the standard state_dict key names (conv1.weight,
bn1.*, layerX.Y.*, layerX.Y.downsample.{0,1}.*, fc.*; timm's SE blocks add
layerX.Y.se.fc1/fc2.{weight,bias}, where fc1/fc2 are 1x1 Conv2d, so their
weights are 4-D [out, in, 1, 1]).  Both use the "v1.5" bottleneck with the
stride on the 3x3 conv.

Why float32 errors need care (`count_near_kinks`, `torch_f32_errors`,
`kink_errors`): a float32 gradient can differ from the float64 one by
1e-3..3e-2 (relative L2) in a perfectly correct implementation.  Some
pre-activation ends up within float32 rounding (~1e-7 relative) of zero,
float32 and float64 disagree on its ReLU mask, and the upstream gradient of
that one element is dropped or let through; the difference then reaches
every gradient further back.  (A max-pool window whose two largest inputs
are within rounding of each other does the same.)  With ~1e5..1e7 ReLU
inputs per network a few such elements usually exist, and whether a given
float32 implementation trips over one depends on its rounding, i.e. is a
coin toss.

  * count_near_kinks: how many such elements a float64 training-mode
    forward pass has.  The preferred remedy is to choose the weight/input
    seed so that there are none (make_fixtures.py, check_parity.py); then
    the ordinary rounding error below is the whole story and the tolerance
    is max(factor * torch_f32_error, floor).
  * torch_f32_errors: the ordinary rounding error of float32, as the median
    over a few float32 "realisations" (two CPU backends, and weights/input
    nudged by at most one ulp -- the size of error any float32 computation
    makes anyway).  The median ignores the realisations that happened to
    flip a mask, so one unlucky run cannot inflate the tolerance 1000x.
  * kink_errors: the first-order effect of flipping each near-zero ReLU
    mask, computed exactly in float64; their sum bounds the error any
    combination of such flips can cause.  Only a fallback for references
    that could not be made kink-free (large networks in check_parity.py),
    with a tolerance of max(factor * torch_f32_error, floor) + 1.5 * kink_error.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Callable

import timm
import torch
import torch.nn as nn
import torchvision
from timm.models.resnet import make_blocks

# Toggling oneDNN (torch.backends.mkldnn.flags) makes torch warn about an
# unrelated Intel-GPU TF32 feature on every toggle.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SERESNETS = tuple("se" + a for a in RESNETS)
ARCHS = RESNETS + SERESNETS
STEMS = ("imagenet", "cifar")
# BLASNet's --norm forms; every one but "batch" puts a GroupNorm where each BatchNorm2d was.
NORMS = ("batch", "group", "group:G", "layer", "instance")

# A ReLU input counts as "near the kink" if |x| < KINK_TOL * rms(x) of its
# tensor: ~100x float32 rounding, so a float32 implementation up to 10x less
# accurate than PyTorch may still disagree with float64 on its sign.
KINK_TOL = 1e-5


def norm_groups(norm: str, channels: int) -> int:
    """GroupNorm groups of BLASNet's --norm for a slot of `channels` channels:
    group[:G] (default 32), layer = GroupNorm(1, C), instance = GroupNorm(C, C)."""
    kind, _, groups = norm.partition(":")
    if kind == "group":
        return int(groups) if groups else 32
    if kind == "layer" and not groups:
        return 1
    if kind == "instance" and not groups:
        return channels
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def replace_norms(model: nn.Module, norm: str) -> nn.Module:
    """Puts nn.GroupNorm(norm_groups(norm, C), C) (eps 1e-5, affine) in place of every
    BatchNorm2d, under the same name, so the state_dict keys stay (minus the running
    buffers).  "batch" leaves the model as it is."""
    if norm == "batch":
        return model
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            parent, _, attr = name.rpartition(".")
            channels = m.num_features
            setattr(model.get_submodule(parent), attr, nn.GroupNorm(norm_groups(norm, channels), channels, eps=1e-5))
    return model


def narrowed(arch: str, num_classes: int, in_chans: int, width: int) -> nn.Module:
    """`arch` with `width` channels in the stem and layer1, doubling per stage
    (BLASNet's `ResNet(width:)`; the published models have 64).

    Neither library narrows the 7x7 stem (timm's `channels` leaves it 64 wide), so
    this is timm's ResNet with `channels`, a `width`-channel stem, and its stages
    made again by timm's own make_blocks from that stem's width.  timm's resnetN
    is torchvision's (same blocks, the stride on the 3x3, same state_dict names:
    at width 64 both give identical float64 outputs for the same weights)."""
    channels = tuple(width << i for i in range(4))
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, channels=channels)
    model.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    depths = [len(getattr(model, f"layer{i + 1}")) for i in range(len(channels))]
    block_args = {"attn_layer": "se"} if arch in SERESNETS else {}
    stages, _ = make_blocks((type(model.layer1[0]),) * len(channels), channels, depths, width,
                            act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d, **block_args)
    for name, stage in stages:
        setattr(model, name, stage)
    return model


def build(arch: str, num_classes: int, in_chans: int = 3, stem: str = "imagenet", norm: str = "batch",
          head_grid: int = 1, width: int = 64) -> nn.Module:
    """Build an untrained model (weights are expected to be overwritten) with BLASNet's
    --norm `norm` in every norm slot, its --head-grid (fc reads
    flatten(adaptive_avg_pool2d(x, head_grid), 1)) and `width` channels in the stem
    and layer1 (64: the library's own model; any other: `narrowed`)."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; expected one of {STEMS}")
    if width != 64:
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
        model = narrowed(arch, num_classes, in_chans, width)
    elif arch in RESNETS:
        model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_chans != 3:
            # torchvision has no in_chans argument; same conv, different input width.
            model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif arch in SERESNETS:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")

    if stem == "cifar":
        # Small images: keep full resolution into layer1 (3x3 stride-1 stem, no max-pool).
        model.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if head_grid != 1:
        features = model.fc.in_features * head_grid * head_grid
        if arch in RESNETS:
            model.avgpool = nn.AdaptiveAvgPool2d(head_grid)  # torchvision flattens after it
        else:
            model.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(head_grid), nn.Flatten(1))
        model.fc = nn.Linear(features, num_classes)
    return replace_norms(model, norm)


# BLASNet's --loss forms; focal is built as `blasnet run --loss focal` defaults it (gamma 2, alpha 1).
LOSSES = ("cross-entropy", "focal")


def loss_value(loss: str, logits: torch.Tensor, target: torch.Tensor,
               gamma: float = 2.0, alpha: float = 1.0) -> torch.Tensor:
    """Mean over the batch of cross-entropy, or of the focal loss
    -alpha * (1 - p_t)^gamma * log p_t (Lin et al. 2017) with p_t the softmax
    probability of the target, computed from log-softmax."""
    if loss == "cross-entropy":
        return nn.functional.cross_entropy(logits, target)  # mean reduction
    if loss == "focal":
        log_pt = nn.functional.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        return (-alpha * (1 - log_pt.exp()) ** gamma * log_pt).mean()
    raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def residual_last_bn_weights(model: nn.Module) -> list[str]:
    """state_dict keys of the gamma of each residual branch's last BatchNorm
    (bn2 in basic blocks, bn3 in bottlenecks; never the downsample BN)."""
    keys = []
    for name, m in model.named_modules():
        if name.startswith("layer") and name.count(".") == 1:  # layerX.Y = one residual block
            keys.append(f"{name}.{'bn3' if hasattr(m, 'bn3') else 'bn2'}.weight")
    return keys


def batchnorm_prefixes(model: nn.Module) -> list[str]:
    """Module names of every BatchNorm layer, in state_dict order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reference_outputs(arch: str, num_classes: int, in_chans: int, stem: str,
                      weights: dict[str, torch.Tensor], x: torch.Tensor,
                      target: torch.Tensor | None, train: bool,
                      dtype: torch.dtype = torch.float64, norm: str = "batch",
                      loss: str = "cross-entropy", head_grid: int = 1, width: int = 64) -> dict[str, torch.Tensor]:
    """Run one forward (and, if `train`, backward) pass and name the results
    exactly like the `blasnet run` CLI output file does:

      eval:  logits
      train: logits, loss, grad.<param>, <bn>.running_mean, <bn>.running_var

    A fresh model is built on every call so that running statistics from a
    previous pass can never leak into the next one.  Inputs and weights are
    converted to `dtype` (float32 -> float64 is exact, so the float64 run
    sees bit-identical starting values).
    """
    model = build(arch, num_classes, in_chans, stem, norm, head_grid, width)
    model.load_state_dict(weights, strict=True)  # strict: a partial load would make a useless reference
    model = model.to(dtype)  # leaves num_batches_tracked as int64
    x = x.to(dtype)
    out: dict[str, torch.Tensor] = {}
    if not train:
        model.eval()
        with torch.no_grad():
            out["logits"] = model(x).detach()
        return out

    if target is None:
        raise ValueError("training mode needs a target")
    model.train()
    logits = model(x)
    value = loss_value(loss, logits, target)
    value.backward()
    out["logits"] = logits.detach()
    out["loss"] = value.detach()
    for name, p in model.named_parameters():
        if p.requires_grad:
            out["grad." + name] = p.grad.detach().clone()
    for prefix in batchnorm_prefixes(model):
        bn = model.get_submodule(prefix)
        # torch updates running_var with the *unbiased* batch variance (n/(n-1)).
        out[prefix + ".running_mean"] = bn.running_mean.detach().clone()
        out[prefix + ".running_var"] = bn.running_var.detach().clone()
    return out


def rel_l2_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (b is the reference).

    An all-zero reference makes the ratio meaningless: report 0 if `a`
    matches it exactly and inf otherwise, so it can't silently pass.
    """
    a = a.detach().to(torch.float64).flatten()
    b = b.detach().to(torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    num = torch.linalg.vector_norm(a - b).item()
    den = torch.linalg.vector_norm(b).item()
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def perturb_ulp(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Move each float32 element by -1, 0 or +1 ulp (uniformly at random).

    Adding to the bit pattern steps to the neighbouring float of the same
    sign; at +-0 it yields a subnormal, which is harmless.  Non-float
    tensors (num_batches_tracked) pass through unchanged.
    """
    if t.dtype != torch.float32:
        return t
    g = torch.Generator().manual_seed(seed)
    step = torch.randint(-1, 2, t.shape, generator=g, dtype=torch.int32)
    return (t.contiguous().view(torch.int32) + step).view(torch.float32)


def f32_realisation(index: int, weights: dict[str, torch.Tensor], x: torch.Tensor
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
    """(weights, input, use_onednn) of float32 realisation `index`.

    0: plain PyTorch float32 (oneDNN convolutions); 1: oneDNN disabled
    (ATen's im2col + GEMM, the same algorithm family as BLASNet); 2, 3, ...:
    one-ulp perturbations of weights and input, alternating the backends.
    """
    use_onednn = index % 2 == 0
    if index < 2:
        return weights, x, use_onednn
    w = {k: perturb_ulp(v, index * 100003 + i) for i, (k, v) in enumerate(weights.items())}
    return w, perturb_ulp(x, index * 100003 + 99991), use_onednn


def torch_f32_errors(ref: dict[str, torch.Tensor], realisations: int,
                     run: Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]],
                     weights: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, float]:
    """Per-key median over `realisations` float32 runs of rel_l2_error(f32, ref).

    `run(weights, x)` must perform the float32 computation and return
    tensors with the same keys as `ref` (after any subsampling).  With
    realisations=1 this is simply plain PyTorch float32's error.
    """
    errors: dict[str, list[float]] = {k: [] for k in ref}
    for i in range(realisations):
        w, xi, use_onednn = f32_realisation(i, weights, x)
        with torch.backends.mkldnn.flags(enabled=use_onednn):
            out = run(w, xi)
        for k in ref:
            errors[k].append(rel_l2_error(out[k], ref[k]))
    # A realisation can come out non-finite for a tensor (seen: one oneDNN run of an
    # fc bias gradient); the median is over the finite ones, and JSON cannot hold NaN.
    finite = {k: [e for e in v if math.isfinite(e)] for k, v in errors.items()}
    missing = [k for k, v in finite.items() if not v]
    if missing:
        raise RuntimeError(f"no finite float32 error for {missing}")
    return {k: statistics.median(v) for k, v in finite.items()}


def _kink_ratio(relu_input: torch.Tensor) -> torch.Tensor:
    """|x| / rms(x) for every element of a ReLU input (flattened); the
    element is near the kink if this is below KINK_TOL."""
    flat = relu_input.detach().flatten()
    return flat.abs() / flat.pow(2).mean().sqrt()


def _max_pool_near_ties(pool: nn.MaxPool2d, x: torch.Tensor, tol: float) -> int:
    """Windows of `pool` on `x` whose largest and second-largest inputs differ by
    less than tol * rms(x): float32 may pick the other one as the maximum, which
    sends that window's gradient to a different element.  Windows whose maximum
    is exactly 0 are ignored (ties between ReLU zeros: every implementation
    produces the same exact zeros, and their upstream gradient is 0 anyway)."""
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    if pair(pool.dilation) != (1, 1) or pool.ceil_mode:
        raise NotImplementedError("near-tie check supports dilation 1, ceil_mode False only")
    (kh, kw), (sh, sw), (ph, pw) = pair(pool.kernel_size), pair(pool.stride or pool.kernel_size), pair(pool.padding)
    x = x.detach()
    rms = x.flatten().pow(2).mean().sqrt()
    padded = nn.functional.pad(x, (pw, pw, ph, ph), value=-math.inf)
    n, c = x.shape[:2]
    windows = nn.functional.unfold(padded.reshape(n * c, 1, *padded.shape[2:]), (kh, kw), stride=(sh, sw))
    top = windows.topk(2, dim=1).values  # [n*c, 2, windows]
    near = ((top[:, 0] - top[:, 1]) < tol * rms) & (top[:, 0] != 0)
    return int(near.sum())


def count_near_kinks(arch: str, num_classes: int, in_chans: int, stem: str,
                     weights: dict[str, torch.Tensor], x: torch.Tensor,
                     tol: float = KINK_TOL, norm: str = "batch", head_grid: int = 1, width: int = 64) -> tuple[int, int]:
    """(ReLU inputs, max-pool windows) near a kink in the float64 training-mode
    forward pass: the ReLU inputs that kink_errors would analyse, and the
    max-pool windows with a near tie (see _max_pool_near_ties).  If both are
    0, a float32 implementation that is within ~100x of float32 rounding takes
    the same branch as float64 at every kink, and its gradients have no reason
    to differ from the reference by more than ordinary rounding.

    Forward only (no autograd), so it costs a fraction of one reference run;
    used to search for well-conditioned seeds.  Eval mode needs no such
    check: a flipped kink changes a forward value by |x| ~ 1e-7 * rms.
    """
    model = build(arch, num_classes, in_chans, stem, norm, head_grid, width)
    model.load_state_dict(weights, strict=True)
    model = model.to(torch.float64).train()
    counts = [0, 0]

    # Pre-hooks see the input before an in-place ReLU overwrites it.
    def relu_hook(_module: nn.Module, args: tuple) -> None:
        counts[0] += int((_kink_ratio(args[0]) < tol).sum())

    def pool_hook(module: nn.Module, args: tuple) -> None:
        counts[1] += _max_pool_near_ties(module, args[0], tol)

    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_pre_hook(relu_hook)
        elif isinstance(m, nn.MaxPool2d):
            m.register_forward_pre_hook(pool_hook)
    with torch.no_grad():
        model(x.to(torch.float64))
    return counts[0], counts[1]


def kink_errors(arch: str, num_classes: int, in_chans: int, stem: str,
                weights: dict[str, torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                ref: dict[str, torch.Tensor],
                transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = lambda d: d,
                tol: float = KINK_TOL, max_kinks: int = 64, norm: str = "batch",
                loss: str = "cross-entropy", head_grid: int = 1, width: int = 64) -> tuple[dict[str, float], int, int]:
    """Gradient error that ReLU-mask flips near the kink can legitimately cause.

    Finds the training-mode ReLU inputs with |x| < tol * rms(x) in float64
    (the ones a float32 implementation may see with the other sign), and for
    each computes, to first order, how flipping its mask changes every
    parameter gradient: the element's upstream gradient g is either dropped
    or let through, i.e. -+g is injected at that ReLU input and propagated
    back.  (The forward change, |x| ~ 1e-7, is negligible.)  Returns
      ({key: sum_j ||delta_j[key]|| / ||ref[key]||}, found, used)
    -- by the triangle inequality a bound on the error from any subset of
    flips.  Keys are those of transform(outputs), e.g. fixture names; only
    gradients are affected, everything else gets 0.  At most `max_kinks`
    elements (the closest to zero) are analysed, since each costs a partial
    backward pass.
    """
    model = build(arch, num_classes, in_chans, stem, norm, head_grid, width)
    model.load_state_dict(weights, strict=True)
    model = model.to(torch.float64).train()

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []  # (relu input, relu output) per call

    def hook(_module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        calls.append((args[0], out))

    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # keep the pre-activation alive as its own graph node
            m.register_forward_hook(hook)

    logits = model(x.to(torch.float64))
    loss_value(loss, logits, target).backward(retain_graph=True)

    candidates = []  # (|x|/rms, call index, flat index)
    for c, (inp, _out) in enumerate(calls):
        ratio = _kink_ratio(inp)
        for i in torch.nonzero(ratio < tol).flatten().tolist():
            candidates.append((ratio[i].item(), c, i))
    candidates.sort()
    used = candidates[:max_kinks]

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ref_norms = {k: torch.linalg.vector_norm(v.to(torch.float64)).item() for k, v in ref.items()}
    totals = {k: 0.0 for k in ref}
    for _ratio, c, i in used:
        inp, out = calls[c]
        g = out.grad.flatten()[i]
        inject = torch.zeros_like(inp).flatten()
        # x > 0: float64 passed g, the flipped mask drops it; x <= 0: the reverse.
        inject[i] = -g if inp.flatten()[i] > 0 else g
        grads = torch.autograd.grad([inp], [p for _, p in params], grad_outputs=[inject.view_as(inp)],
                                    retain_graph=True, allow_unused=True)
        delta = {"grad." + n: (d if d is not None else torch.zeros_like(p)) for (n, p), d in zip(params, grads)}
        for k, v in transform(delta).items():
            if k in totals and ref_norms[k] > 0:
                totals[k] += torch.linalg.vector_norm(v).item() / ref_norms[k]
    return totals, len(candidates), len(used)
