"""Entropy models: the factorized prior for z and the Gaussian conditional for y.

Both models do three jobs (docs/entropy.md):

    likelihoods  ->  rate term of forward()                 (float32, NumPy or CuPy)
    CDF tables   ->  integer frequencies for the coder      (host, once per weight file)
    symbols      ->  round(x - mean) and the table row used to code them

    z --(- median, round)--> symbols --[EB table row = channel c]--> coder
    y --(- mu, round)------> symbols --[GC table row = index(scale)]--> coder

The CDF tables are integers: they are computed once when a model is converted
and stored in the weight file, so encoder and decoder use identical numbers
whatever floating-point hardware they run on.

EB = EntropyBottleneck (STF's fork of CompressAI, with the "sign trick");
GC = GaussianConditional. Weights of the EB are passed as a dict `eb` with the
names of the checkpoint minus the `entropy_bottleneck.` prefix:
`_matrix0.._matrix4`, `_bias0.._bias4`, `_factor0.._factor3`, `quantiles`.
"""
import heapq

import numpy as np

from .backend import erfc, to_host, xp_of

PRECISION = 16                          # coder precision: frequencies sum to 2**16
LIKELIHOOD_BOUND = np.float32(1e-9)     # lower bound of every likelihood
TAIL_MASS = 1e-9                        # probability mass left outside each table
SCALE_BOUND = np.float32(0.11)          # float32 0.11: bit-identical to SCALE_TABLE[0]
GC_MULTIPLIER = 6.1094102048693975      # -Phi^-1(TAIL_MASS / 2), scipy norm.ppf(5e-10)
_PHI_C = np.float32(-(2 ** -0.5))       # Phi(x) = 0.5 * erfc(-x / sqrt 2), constant in float32

# The 64 scales of the GC table, log-spaced from 0.11 to 256. Taken as literal
# float32 bits (docs/entropy.md §4.6): torch's float32 exp(linspace(...)) is not
# bit-reproducible with NumPy, and one flipped bit moves scales between rows.
_SCALE_TABLE_BITS = [
    0x3de147ae, 0x3dfec793, 0x3e101230, 0x3e22efc7, 0x3e3845c8, 0x3e506704, 0x3e6bb124, 0x3e85470a,
    0x3e96bacd, 0x3eaa779a, 0x3ec0ca0e, 0x3eda08ca, 0x3ef695cc, 0x3f0b6ff2, 0x3f1db234, 0x3f325889,
    0x3f49b318, 0x3f641c86, 0x3f80fdab, 0x3f91e1bd, 0x3fa4fc07, 0x3fba96af, 0x3fd3058f, 0x3feea77c,
    0x4006f3dc, 0x40189fc7, 0x402c9c16, 0x4043365c, 0x405cc651, 0x4079af2f, 0x408d3097, 0x409fad98,
    0x40b4965b, 0x40cc3c0e, 0x40e6fa78, 0x41029cb1, 0x4113b71b, 0x41270edd, 0x413cef07, 0x4155ac83,
    0x4171a758, 0x4188a610, 0x419a8ad8, 0x41aec774, 0x41c5aa71, 0x41df8ca9, 0x41fcd28b, 0x420ef6dd,
    0x4221af59, 0x4236db65, 0x424ecd30, 0x4269e1a0, 0x428440f0, 0x42959263, 0x42a9285d, 0x42bf4eec,
    0x42d85c06, 0x42f4b0de, 0x430a5dbd, 0x431c7c18, 0x4330f9ce, 0x43482672, 0x43625beb, 0x43800000,
]
SCALE_TABLE = np.array(_SCALE_TABLE_BITS, dtype=np.uint32).view(np.float32)  # (64,)


# ---------------------------------------------------------------------------
# Probabilities -> integer CDF (docs/entropy.md §5)

def pmf_to_quantized_cdf(pmf, precision=PRECISION):
    """Quantize probabilities to integer frequencies summing to 2**precision.

    Args:
        pmf: (n,) non-negative float32 probabilities: the regular symbols,
            then the tail (escape) mass as the last entry.
    Returns:
        (n+1,) int32 cumulative frequencies, cdf[0] = 0, cdf[n] = 2**precision,
        every symbol with frequency >= 1.
    """
    total_freq = 1 << precision
    scaled = np.asarray(pmf, dtype=np.float32) * np.float32(total_freq)    # exact: power of two
    scaled = scaled.astype(np.float64)  # round half AWAY from zero (C++ std::round), exact in float64
    freq = (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int64)
    if freq.sum() <= 0:
        raise ValueError("pmf_to_quantized_cdf: the probabilities sum to zero after scaling")
    freq = freq * total_freq // freq.sum()                                  # renormalise, floor
    freq[-1] += total_freq - freq.sum()     # cdf[n] := 2**precision: the deficit goes to the escape

    # Zero-frequency repair: upstream scans the symbols in order and gives each
    # zero-frequency symbol one unit taken from the symbol whose frequency is the
    # smallest one above 1 (lowest index on ties). The donor choice does not
    # depend on which zero symbol is being repaired, so a heap of (freq, index)
    # replays the same sequence of donations.
    zeros = np.flatnonzero(freq == 0)
    if zeros.size:
        donors = [(int(f), int(j)) for j, f in enumerate(freq) if f > 1]
        heapq.heapify(donors)
        for i in zeros:
            if not donors:
                raise ValueError("pmf_to_quantized_cdf: more symbols than 2**precision")
            f, j = heapq.heappop(donors)
            freq[j] -= 1
            freq[i] = 1
            if f - 1 > 1:
                heapq.heappush(donors, (f - 1, j))
    return np.concatenate([[0], np.cumsum(freq)]).astype(np.int32)


def _cdf_table(pmfs, tail_mass, pmf_length, max_length):
    """Rows [pmf[:len], tail] -> zero-padded (rows, max_length + 2) int32 table."""
    table = np.zeros((len(pmfs), max_length + 2), dtype=np.int32)
    for r, (p, t, n) in enumerate(zip(pmfs, tail_mass, pmf_length)):
        row = np.append(p[:n], t).astype(np.float32)                  # (n+1,)
        table[r, :n + 2] = pmf_to_quantized_cdf(row)
    return table


def _sigmoid(x):
    """1 / (1 + exp(-x)) in float32, written as torch evaluates it (closest ulps).

    exp's argument is capped at 88 (< ln float32 max) to avoid overflow
    warnings; that only changes results below 1e-38.
    """
    xp = xp_of(x)
    return np.float32(1) / (np.float32(1) + xp.exp(xp.minimum(-x, np.float32(88))))


# ---------------------------------------------------------------------------
# EntropyBottleneck: a learned CDF per channel (docs/entropy.md §3)

def eb_logits_cumulative(v, eb):
    """Logit of the learned CDF of every channel, at the sample points `v`.

    Five per-channel dense layers 1 -> 3 -> 3 -> 3 -> 3 -> 1 with positive
    (softplus) weights, each but the last followed by v + tanh(factor) * tanh(v):
    a monotonic function of v.

    Args:
        v: (C, 1, N) float32 sample points, one row per channel.
    Returns:
        (C, 1, N) float32 logits.
    """
    xp = xp_of(v)
    for i in range(5):
        m = eb[f"_matrix{i}"]                                         # (C, F_out, F_in)
        softplus = xp.where(m > 20, m, xp.log1p(xp.exp(xp.minimum(m, 20))))
        v = xp.matmul(softplus, v) + eb[f"_bias{i}"]                  # (C, F_in, N) -> (C, F_out, N)
        if i < 4:
            v = v + xp.tanh(eb[f"_factor{i}"]) * xp.tanh(v)
    return v


def _eb_prob(v, eb):
    """P(value in [v - 0.5, v + 0.5]) per channel, (C, 1, N) -> (lower, upper, prob).

    The "sign trick" of STF's fork: evaluate the difference of sigmoids on the
    side of the distribution where both are small (more precise in float32).
    If lower + upper is exactly 0 the sign is 0 and the result 0 (upstream quirk).
    """
    xp = xp_of(v)
    half = np.float32(0.5)
    lower = eb_logits_cumulative(v - half, eb)
    upper = eb_logits_cumulative(v + half, eb)
    sign = -xp.sign(lower + upper)
    return lower, upper, xp.abs(_sigmoid(sign * upper) - _sigmoid(sign * lower))


def eb_medians(eb):
    """(C,) median of every channel: the middle one of the learned quantiles."""
    return eb["quantiles"][:, 0, 1]


def eb_likelihood(z, eb):
    """forward() in eval mode: likelihoods of round(z - median) + median.

    Args:
        z: (B, h, w, C) float32 hyper-latent, channels-last.
    Returns:
        (B, h, w, C) float32 likelihoods, at least 1e-9.
    """
    xp = xp_of(z)
    C = z.shape[-1]
    med = eb_medians(eb)                                               # (C,)
    z_tilde = xp.rint(z - med) + med
    v = z_tilde.reshape(-1, C).T[:, None, :]                          # (B, h, w, C) -> (C, 1, B*h*w)
    lik = _eb_prob(v, eb)[2]
    lik = xp.maximum(lik, LIKELIHOOD_BOUND)
    return lik[:, 0, :].T.reshape(z.shape)                            # (C, 1, B*h*w) -> (B, h, w, C)


def eb_pmf(eb):
    """The EB probabilities that go into the z CDF table (docs/entropy.md §3.5), host float32.

    Every channel is sampled at the same number of points max_length, starting
    at median - minima; only the first pmf_length[c] samples are used.

    Returns dict: pmf (C, max_length) float32, tail_mass (C,) float32,
    pmf_length (C,) int32, offset (C,) int32.
    """
    eb = {k: to_host(a).astype(np.float32) for k, a in eb.items()}
    q = eb["quantiles"]                                                # (C, 1, 3)
    med = q[:, 0, 1]
    minima = np.maximum(np.ceil(med - q[:, 0, 0]), 0).astype(np.int32)
    maxima = np.maximum(np.ceil(q[:, 0, 2] - med), 0).astype(np.int32)
    pmf_start = med - minima.astype(np.float32)
    pmf_length = minima + maxima + 1
    max_length = int(pmf_length.max())
    t = pmf_start[:, None, None] + np.arange(max_length, dtype=np.float32)   # (C, 1, max_length)
    lower, upper, pmf = _eb_prob(t, eb)
    # Quirk kept from upstream: the upper tail is taken at the LAST common
    # sample, not at the channel's own last sample pmf_length[c] - 1.
    tail_mass = _sigmoid(lower[:, 0, 0]) + _sigmoid(-upper[:, 0, -1])
    return {"pmf": pmf[:, 0, :], "tail_mass": tail_mass,
            "pmf_length": pmf_length.astype(np.int32), "offset": (-minima).astype(np.int32)}


def eb_tables(eb):
    """The z CDF buffers, keyed by their checkpoint names (int32 NumPy)."""
    p = eb_pmf(eb)
    n = p["pmf_length"]
    return {
        "entropy_bottleneck._quantized_cdf": _cdf_table(p["pmf"], p["tail_mass"], n, int(n.max())),
        "entropy_bottleneck._offset": p["offset"],
        "entropy_bottleneck._cdf_length": (n + 2).astype(np.int32),
    }


# ---------------------------------------------------------------------------
# GaussianConditional: N(mu, scale) integrated over unit bins (docs/entropy.md §4)

def _phi(x):
    """Standard normal CDF in float32: 0.5 * erfc(-x / sqrt 2)."""
    return np.float32(0.5) * erfc(_PHI_C * x)


def gc_likelihood(y, scales, means):
    """forward() in eval mode: P(round(y - mu) + mu) under N(mu, max(scale, 0.11)).

    All arguments have the same shape (any layout); float32; returns float32 >= 1e-9.
    """
    xp = xp_of(y, scales, means)
    half = np.float32(0.5)
    y_tilde = xp.rint(y - means) + means
    v = xp.abs(y_tilde - means)             # as upstream: add the mean, subtract it again
    s = xp.maximum(scales, SCALE_BOUND)
    lik = _phi((half - v) / s) - _phi((-half - v) / s)
    return xp.maximum(lik, LIKELIHOOD_BOUND)


def gc_pmf():
    """The GC probabilities per scale-table row (docs/entropy.md §4.3), host float32.

    float32 arithmetic throughout, except erfc, evaluated in float64 and rounded
    to float32: this reproduces upstream's 64 table rows exactly.

    Returns dict: pmf (64, max_length), tail_mass (64,), pmf_length (64,), offset (64,).
    """
    def phi(x):                                                        # float32 in, float32 out
        return np.float32(0.5) * erfc((_PHI_C * x).astype(np.float64)).astype(np.float32)

    center = np.ceil(SCALE_TABLE * np.float32(GC_MULTIPLIER)).astype(np.int32)  # (64,)
    pmf_length = 2 * center + 1
    max_length = int(pmf_length.max())
    s = np.abs(np.arange(max_length)[None, :] - center[:, None]).astype(np.float32)  # (64, max_length)
    scale = SCALE_TABLE[:, None]
    upper = phi((np.float32(0.5) - s) / scale)
    lower = phi((np.float32(-0.5) - s) / scale)
    return {"pmf": upper - lower, "tail_mass": np.float32(2) * lower[:, 0],
            "pmf_length": pmf_length.astype(np.int32), "offset": (-center).astype(np.int32)}


def gc_tables():
    """The y CDF buffers and the scale table, keyed by their checkpoint names."""
    p = gc_pmf()
    n = p["pmf_length"]
    return {
        "gaussian_conditional._quantized_cdf": _cdf_table(p["pmf"], p["tail_mass"], n, int(n.max())),
        "gaussian_conditional._offset": p["offset"],
        "gaussian_conditional._cdf_length": (n + 2).astype(np.int32),
        "gaussian_conditional.scale_table": SCALE_TABLE.copy(),
    }


def build_indexes(scales):
    """Table row of each scale: the smallest k with SCALE_TABLE[k] >= max(scale, 0.11), else 63.

    Scales at or below 0.11 (float32) land exactly on row 0. Any shape; int32.
    """
    xp = xp_of(scales)
    s = xp.maximum(scales, SCALE_BOUND)
    table = xp.asarray(SCALE_TABLE[:-1])                              # (63,) rows 0..62
    return xp.searchsorted(table, s.ravel(), side="left").astype(xp.int32).reshape(s.shape)


# ---------------------------------------------------------------------------
# Symbols

def quantize_symbols(x, means):
    """round(x - means), half to even, as int32 symbols."""
    xp = xp_of(x, means)
    return xp.rint(x - means).astype(xp.int32)


def dequantize(symbols, means):
    """symbols + means in the float dtype of `means`."""
    return symbols.astype(means.dtype) + means
