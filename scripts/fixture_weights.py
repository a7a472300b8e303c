"""Deterministic weights that Python and Swift can both regenerate bit-exactly.

Fixture files would be tens of megabytes if they stored the weights, so they
store only the reference outputs and the Swift test regenerates the weights
from this specification:

  h0      = fnv1a64(key.encode("utf-8")) ^ seed
  z_i     = splitmix64 finaliser of (h0 + (i + 1) * 0x9E3779B97F4A7C15)   (i = flat row-major index)
  u_i     = float64(z_i >> 40) / 2**23 - 1.0                              (exactly representable, in [-1, 1))
  value_i = float32(u_i * scale + offset)                                 (float64 math, ONE rounding to float32)

All integer arithmetic is mod 2**64.  The float64 expression is a multiply
followed by an add, each rounded separately (no fused multiply-add); the
Swift side must not contract it into an FMA either.  scale/offset depend on
the key (see `scale_offset`).

Run `python fixture_weights.py` to print reference values the Swift test
compares against.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1

# Elements per chunk: bounds the temporaries of the uint64 pipeline
# (~6 live arrays x 8 bytes) to a few tens of MB even for the largest tensor.
_CHUNK = 1 << 20


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & MASK64
    return h


def uniform(key: str, numel: int, seed: int = 0) -> np.ndarray:
    """float64 u_i in [-1, 1) for i in [0, numel), per the module docstring."""
    h0 = np.uint64((fnv1a64(key.encode("utf-8")) ^ seed) & MASK64)
    out = np.empty(numel, dtype=np.float64)
    golden, mix1, mix2 = np.uint64(GOLDEN), np.uint64(MIX1), np.uint64(MIX2)
    s27, s30, s31, s40 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(40)
    # uint64 array arithmetic wraps mod 2**64, which is exactly what we want;
    # errstate only silences the (array-irrelevant, scalar-only) overflow warnings.
    with np.errstate(over="ignore"):
        for start in range(0, numel, _CHUNK):
            stop = min(start + _CHUNK, numel)
            z = np.arange(start + 1, stop + 1, dtype=np.uint64)
            z *= golden
            z += h0
            z ^= z >> s30
            z *= mix1
            z ^= z >> s27
            z *= mix2
            z ^= z >> s31
            # 24 high bits -> exact float64; the division by 2**23 is exact too.
            out[start:stop] = (z >> s40).astype(np.float64) / float(1 << 23) - 1.0
    return out


def deterministic_tensor(key: str, shape: Sequence[int], seed: int = 0,
                         scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """float32 tensor of u*scale+offset; used directly for inputs ("input", scale 1)."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    u = uniform(key, numel, seed)
    # Two separately rounded float64 ops (numpy never fuses), then one cast.
    vals = (u * scale + offset).astype(np.float32)
    return torch.from_numpy(vals.reshape(shape))


def scale_offset(key: str, shape: Sequence[int]) -> tuple[float, float]:
    """(scale, offset) for a state_dict entry.

    Chosen so that the networks behave like freshly initialised ones: running
    variances near 1 (never near 0, which would blow up eval-mode outputs),
    BN gammas near 1, small biases, and He-uniform conv/linear weights, which
    keep each layer's activations at a similar scale.  (In eval mode the
    residual sums still grow ~1.6x per block, to ~1e10 at the end of
    resnet152; that is harmless for relative-error comparisons.)
    """
    ndim = len(shape)
    if key.endswith("running_var"):
        return 0.5, 1.0
    if key.endswith("running_mean"):
        return 0.1, 0.0
    if key.endswith(".weight") and ndim == 1:
        return 0.25, 1.0
    if key.endswith(".bias"):
        return 0.1, 0.0
    if ndim >= 2:
        fan_in = math.prod(shape[1:])
        return math.sqrt(6.0 / fan_in), 0.0
    raise ValueError(f"no deterministic-init rule for {key!r} with shape {list(shape)}")


def deterministic_state_dict(model_state_dict_shapes: Mapping[str, object],
                             seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic replacement for a model's state_dict.

    `model_state_dict_shapes` maps key -> shape; tensors are accepted too
    (their .shape is used), so `deterministic_state_dict(model.state_dict())`
    works.  Returns float32 tensors (int64 scalar 0 for num_batches_tracked),
    ready for `model.load_state_dict`.
    """
    out: dict[str, torch.Tensor] = {}
    for key, shape in model_state_dict_shapes.items():
        if isinstance(shape, torch.Tensor):
            shape = shape.shape
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.int64)
            continue
        scale, offset = scale_offset(key, shape)
        out[key] = deterministic_tensor(key, shape, seed, scale, offset)
    return out


def _self_check() -> None:
    w = deterministic_state_dict({"conv1.weight": [64, 3, 3, 3]}, seed=0)["conv1.weight"]
    first = w.flatten()[:4].tolist()
    print(f"fnv1a64('conv1.weight') = 0x{fnv1a64(b'conv1.weight'):016x}")
    print("conv1.weight [64,3,3,3] seed 0, first 4 values:")
    for i, v in enumerate(first):
        # repr of a float32 widened to float64 is exact; the hex bit pattern
        # is what the Swift test should compare.
        bits = np.float32(v).view(np.uint32)
        print(f"  [{i}] {v!r:<24} float32 bits 0x{int(bits):08x}")

    # A few more vectors covering the other rules and a non-zero seed, so a
    # Swift port can be checked beyond the conv branch.
    extra = {
        "bn1.weight": [64], "bn1.bias": [64], "bn1.running_mean": [64],
        "bn1.running_var": [64], "fc.weight": [10, 512],
    }
    for key, tensor in deterministic_state_dict(extra, seed=7).items():
        vals = ", ".join(f"0x{int(b):08x}" for b in tensor.flatten()[:2].numpy().view(np.uint32))
        print(f"  seed 7 {key}{list(tensor.shape)} first 2 float32 bits: {vals}")

    # Sanity: u is a multiple of 2**-23 in [-1, 1) and roughly uniform.
    u = uniform("sanity", 1 << 20)
    assert u.min() >= -1.0 and u.max() < 1.0
    assert np.all(u * (1 << 23) == np.round(u * (1 << 23)))
    assert abs(u.mean()) < 5e-3 and abs(u.var() - 1.0 / 3.0) < 5e-3


if __name__ == "__main__":
    _self_check()
