"""The fast layer: the kernels of `minstf.reference`, rewritten for speed (see `minstf.switch`).

    ops.py      linear, conv2d (taps-first or blocked im2col), conv2d_gelu, pixel_shuffle,
                layer_norm, gelu (float32 erfc fit), softmax, end_conv by bands
    swin.py     window attention and the Swin block by groups of windows, through a token index
    threads.py  the thread pool, parallel rows and blocks, the block-size table
    layouts.py  weight re-layouts made once per array; products into strided outputs
    wacnn.py    WACNN's transposed convolution by output phases, its window attention block

Windows, the relative position index and bias and the shift mask are not on the hot
path: the fast layer uses the reference functions themselves. So does WACNN for GDN
and IGDN (one product and two elementwise passes).
"""
from ..reference.swin import (relative_position_bias, relative_position_index,  # noqa: F401
                              shift_attention_mask, window_partition, window_reverse)
from .ops import conv2d, conv2d_gelu, end_conv, gelu, layer_norm, linear, pixel_shuffle, softmax  # noqa: F401
from .swin import swin_block, window_attention  # noqa: F401
from ..reference.wacnn import gdn, igdn  # noqa: F401
from .wacnn import conv_transpose2d, window_attention_block  # noqa: F401
