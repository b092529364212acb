"""Windows, relative position index and shift masks (docs/architecture.md §2.2–2.5), against golden data."""
import numpy as np
import pytest

from minstf.reference.swin import (relative_position_index, shift_attention_mask, window_partition,
                         window_reverse)


@pytest.mark.parametrize("B,Hp,Wp,C,ws", [(1, 8, 12, 3, 4), (2, 16, 8, 5, 4), (1, 6, 9, 2, 3)])
def test_partition_order_and_reverse_is_inverse(B, Hp, Wp, C, ws):
    x = np.random.default_rng(0).standard_normal((B, Hp, Wp, C)).astype(np.float32)
    win = window_partition(x, ws)
    nh, nw = Hp // ws, Wp // ws
    assert win.shape == (B * nh * nw, ws * ws, C)
    # window index = (b*nh + window row)*nw + window column; token n = i*ws + j
    for b, r, c, i, j in [(0, 0, 0, 0, 0), (B - 1, nh - 1, nw - 1, ws - 1, 1), (0, nh - 1, 0, 1, ws - 1)]:
        np.testing.assert_array_equal(win[(b * nh + r) * nw + c, i * ws + j], x[b, r * ws + i, c * ws + j])
    np.testing.assert_array_equal(window_reverse(win, ws, Hp, Wp), x)


def test_relative_position_index_matches_golden(golden):
    got = relative_position_index(4)
    assert got.dtype == np.int64 and got.shape == (16, 16)
    np.testing.assert_array_equal(got, golden["rel_pos_index"])
    assert got.min() == 0 and got.max() == 48


@pytest.mark.parametrize("H,W,key", [(8, 12, "attn_mask_8x12"), (64, 96, "attn_mask_64x96"),
                                     (61, 92, "b_enc_mask_layer0")])
def test_shift_mask_matches_golden(golden, H, W, key):
    got = shift_attention_mask(H, W, 4, 2)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, golden[key])


def test_shift_mask_single_window_row():
    # Hp == ws: the first band is empty; values are only 0 and -100 and the diagonal is 0
    m = shift_attention_mask(3, 9, 4, 2)
    assert m.shape == (3, 16, 16)
    assert set(np.unique(m)) <= {0.0, -100.0}
    assert (np.diagonal(m, axis1=1, axis2=2) == 0).all()
