"""Copy the small part of the golden test vector that the tests need into tests/fixtures/.

The full file (spec/golden/stf_golden.npz, 20 MB) lives in the workspace's shared
folder; this subset lets the suite run outside it. Tests that need a key that is
not in the subset skip with a reason when the full file is absent.

    python tools/make_fixtures.py ../shared/spec/golden/stf_golden.npz
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


def main(src, dst="tests/fixtures/stf_golden_small.npz"):
    golden = np.load(src)
    keep = {k: golden[k] for k in golden.files if k in KEEP or k.startswith(KEEP_PREFIXES)}
    np.savez_compressed(dst, **keep)
    print(f"{dst}: {len(keep)} arrays, {Path(dst).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:])
