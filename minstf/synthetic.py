"""Synthetic weights from the golden recipe (docs/golden.md §1).

Upstream's golden test vector was produced with weights that anyone can
regenerate in plain NumPy: one PCG64 generator per parameter, seeded with
20220000 + the key's position in the upstream state dict (buffers count too),
drawn in float64 and cast to float32. The same recipe works for any
configuration, so it also provides the full-size and small models used by
benchmarks, cross-checks and lessons.
"""
import hashlib
import math

import numpy as np

from .config import STFConfig, WACNNConfig
from .keys import WACNN_DECONVS, state_dict_spec, wacnn_state_dict_spec

SEED_BASE = 20220000


def _recipe_array(key, shape, rng):
    z = lambda: rng.standard_normal(shape)  # noqa: E731 — one call, C-order fill
    if key.startswith("entropy_bottleneck."):
        name = key.split(".", 1)[1]
        C = shape[0]
        if name == "quantiles":
            m = 0.5 * rng.standard_normal(C)
            u = rng.random((2, C))
            lo, hi = 3.0 + 5.0 * u[0], 3.0 + 5.0 * u[1]
            q = np.empty(shape)
            q[:, 0, 0], q[:, 0, 1], q[:, 0, 2] = m - lo, m, m + hi
            return q
        if name.startswith("_matrix"):
            F = 1 if name == "_matrix4" else 3
            s = 10.0 ** (1.0 / 5)
            return math.log(math.expm1(1.0 / s / F)) + 0.1 * z()
        if name.startswith("_bias"):
            return rng.uniform(-0.5, 0.5, size=shape)
        if name.startswith("_factor"):
            return 0.1 * z()
        raise KeyError(key)
    if key.endswith("relative_position_bias_table"):
        return 0.5 * z()
    if len(shape) == 4:  # convolutions: fan-in scaling
        g = 0.02 if key == "end_conv.2.weight" else 2.0
        return z() * math.sqrt(g / (shape[1] * shape[2] * shape[3]))
    if len(shape) == 2:  # linear layers
        return z() * math.sqrt(1.0 / shape[1])
    if key.endswith(".weight"):  # LayerNorm gains
        return 1.0 + 0.1 * z()
    if key.endswith(".bias"):
        offset = 0.0
        if key.startswith("cc_scale_transforms.") and key.endswith(".8.bias"):
            offset = 3.0
        elif key == "end_conv.2.bias":
            offset = 0.5
        return 0.1 * z() + offset
    raise KeyError(key)


def _wacnn_recipe_array(key, shape, rng):
    """WACNN's rules (docs/wacnn.md §6), tried in order; the first that matches decides.

    The plain STF rules would let the activations explode (IGDN multiplies by
    sqrt(beta + gamma x^2), the gates and transposed convolutions compound it), hence:
    GDN beta near 1 and gamma near a scaled identity, transposed convolutions scaled by
    their average taps per output pixel (Cin*k*k/4), and small gains on the last conv of
    every residual unit, on the gate logits and on the image.
    """
    z = lambda: rng.standard_normal(shape)  # noqa: E731 — one call, C-order fill
    if key.startswith("entropy_bottleneck.") or key.endswith("relative_position_bias_table"):
        return _recipe_array(key, shape, rng)  # as STF's
    if key.endswith(".beta"):  # GDN / IGDN, stored reparametrised
        return 1.0 + 0.1 * z()
    if key.endswith(".gamma"):
        diag, noise = (math.sqrt(0.1), 0.05) if key.startswith("g_a.") else (0.15, 0.015)
        return noise * z() + diag * np.eye(shape[0])
    if key.rsplit(".", 1)[0] in WACNN_DECONVS and key.endswith(".weight"):  # (Cin, O, k, k)
        g = 0.06 if key == "g_s.8.weight" else 0.5
        return z() * math.sqrt(g / (shape[0] * shape[2] * shape[3] / 4))
    if len(shape) == 4:  # convolutions: fan-in scaling
        g = 0.5 if key.endswith((".conv.4.weight", "conv_b.4.weight")) else 2.0
        return z() * math.sqrt(g / (shape[1] * shape[2] * shape[3]))
    if len(shape) == 2:  # the attention's linear layers
        return z() * math.sqrt(1.0 / shape[1])
    if key.endswith(".bias"):
        offset = 0.0
        if key.startswith("cc_scale_transforms.") and key.endswith(".8.bias"):
            offset = 3.0
        elif key == "g_s.8.bias":
            offset = 0.5
        return 0.1 * z() + offset
    raise KeyError(key)


def recipe_weights(config=STFConfig()):
    """All learned parameters of `config` (an STFConfig or a WACNNConfig), as {key: float32 array}
    (PyTorch layouts)."""
    if isinstance(config, WACNNConfig):
        spec, rule = wacnn_state_dict_spec(config), _wacnn_recipe_array
    else:
        spec, rule = state_dict_spec(config), _recipe_array
    params = {}
    for k, item in enumerate(spec):
        if item.kind != "param":
            continue  # buffers keep their constructed values but use up their index
        rng = np.random.default_rng(SEED_BASE + k)
        params[item.key] = np.asarray(rule(item.key, item.shape, rng)).astype(np.float32)
    return params


def sha256_of(array):
    """SHA-256 of an array's float32 little-endian bytes (docs/golden.md §1 step 4)."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()
