"""The reference layer: STF's computations written to be read (see `minstf.switch`).

    ops.py    linear, conv2d (im2col), conv2d_gelu, pixel_shuffle, layer_norm, gelu, softmax, end_conv
    swin.py   windows, relative position bias, shift mask, window attention, the Swin block
    wacnn.py  WACNN's pieces: transposed convolution, GDN / IGDN, window attention without norm or MLP

`load_model(..., kernels="reference")` runs the whole codec on these functions.
"""
from .ops import conv2d, conv2d_gelu, end_conv, gelu, layer_norm, linear, pixel_shuffle, softmax  # noqa: F401
from .swin import (relative_position_bias, relative_position_index, shift_attention_mask,  # noqa: F401
                   swin_block, window_attention, window_partition, window_reverse)
from .wacnn import conv_transpose2d, gdn, igdn, window_attention_block  # noqa: F401
