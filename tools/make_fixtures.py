"""Copy the small part of the golden test vector that the tests need into tests/fixtures/.

The full file (spec/golden/stf_golden.npz, 20 MB) lives in the workspace's shared
folder; this subset lets the suite run outside it. Tests that need a key that is
not in the subset skip with a reason when the full file is absent.

    python tools/make_fixtures.py ../shared/spec/golden/stf_golden.npz
    python tools/make_fixtures.py --cnn ../shared/spec/golden/cnn_golden.npz     (WACNN, docs/wacnn.md §6)
"""
import sys
from pathlib import Path

import numpy as np

# Large per-block taps (enc*_blk*, dec*_blk*, patch_embed, big masks) stay out.
KEEP_PREFIXES = ("eb_", "gc_", "b_eval_")
KEEP = {
    "rel_pos_index", "x", "y", "z", "z_hat", "z_shape", "latent_means", "latent_scales", "mu",
    "scale", "lrp_raw", "symbols", "index", "y_hat_pre_lrp", "y_hat", "lik_y", "lik_z",
    "y_symbols_flat", "y_indexes_flat", "z_symbols_flat", "z_indexes_flat", "y_string",
    "z_string", "y_string_len", "z_string_len", "y_round_margin", "scale_bucket_rel_margin",
    "x_hat_forward", "x_hat_decompress", "attn_mask_8x12", "enc0_out", "enc1_out", "enc2_out",
    "enc3_blk1", "dec0_out", "dec1_out", "bpp", "psnr", "b_x", "b_enc0_out", "b_enc1_out",
    "b_enc2_out", "b_enc3_out", "b_y", "b_z", "b_lik_y", "b_lik_z", "b_y_string", "b_z_string",
    "b_x_hat_forward", "b_x_hat_decompress",
}


# WACNN: everything at the latent's size and below, g_a / g_s at H/8, the masks (zeros and -100s compress
# well) and the entropy tables; the maps at H/2 and H/4 (1-5 MB each) stay out.
CNN_KEEP_PREFIXES = ("eb_", "b_eval_", "rel_pos_index_", "attn_mask_", "b_attn_mask_")
CNN_KEEP = {
    "gc_quantized_cdf", "gc_cdf_length", "gc_offset", "gc_scale_table",
    "g_a1_beta_eff", "g_a1_gamma_eff", "g_s2_beta_eff", "g_s2_gamma_eff",
    "x", "g_a5", "g_a6", "g_a7", "y", "g_a8_conv_a", "g_a8_attn", "g_a8_gate", "z", "z_hat", "z_shape",
    "latent_means", "latent_scales", "mu", "scale", "lrp_raw", "symbols", "index", "y_hat_pre_lrp", "y_hat",
    "y_symbols_flat", "y_indexes_flat", "z_symbols_flat", "z_indexes_flat", "y_string", "z_string",
    "y_string_len", "z_string_len", "y_round_margin", "scale_bucket_abs_margin", "z_round_margin",
    "lik_y", "lik_z", "g_s0", "g_s0_conv_a", "g_s0_attn", "g_s0_gate", "g_s1", "g_s2",
    "x_hat_forward", "x_hat_decompress", "bpp", "psnr",
    "b_x", "b_y", "b_z", "b_z_hat", "b_z_shape", "b_mu", "b_scale", "b_symbols", "b_index", "b_y_hat",
    "b_lik_y", "b_lik_z", "b_y_string", "b_z_string", "b_x_hat_forward", "b_x_hat_decompress",
}


def main(src, dst="tests/fixtures/stf_golden_small.npz", keep_keys=KEEP, keep_prefixes=KEEP_PREFIXES):
    golden = np.load(src)
    keep = {k: golden[k] for k in golden.files if k in keep_keys or k.startswith(keep_prefixes)}
    np.savez_compressed(dst, **keep)
    print(f"{dst}: {len(keep)} arrays, {Path(dst).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cnn"]:
        main(*(sys.argv[2:3] or ["../shared/spec/golden/cnn_golden.npz"]), "tests/fixtures/cnn_golden_small.npz",
             CNN_KEEP, CNN_KEEP_PREFIXES)
    else:
        main(*sys.argv[1:])
