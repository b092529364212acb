"""The one switch between the two layers of kernels.

    "reference"  minstf/reference/: STF written to be read, one formula a line
    "fast"       minstf/kernels/:   the same functions rewritten for speed (the default)

transforms.py, slices.py and model.py are written once over INTERFACE, the functions
both layers provide with the same signatures (a fast one may add keyword arguments);
`load_model(..., kernels="reference")` picks the layer for a whole model, so every
entry point (forward, compress, decompress, files) runs on either. tests/test_kernels.py
proves every fast function equal to its reference twin within float32 noise.
"""
import importlib

KERNELS = ("fast", "reference")
DEFAULT_KERNELS = "fast"
INTERFACE = ("linear", "conv2d", "conv2d_gelu", "pixel_shuffle", "layer_norm", "gelu", "softmax", "end_conv",
             "window_partition", "window_reverse", "relative_position_index", "relative_position_bias",
             "shift_attention_mask", "window_attention", "swin_block",
             "conv_transpose2d", "gdn", "igdn", "window_attention_block")  # the last four: WACNN
_PACKAGES = {"fast": "minstf.kernels", "reference": "minstf.reference"}


def get_kernels(kernels=DEFAULT_KERNELS):
    """The module of a layer ("fast" or "reference"); a module is returned as it is."""
    if not isinstance(kernels, str):
        return kernels
    if kernels not in _PACKAGES:
        raise ValueError(f"unknown kernels {kernels!r}; choose one of {KERNELS}")
    return importlib.import_module(_PACKAGES[kernels])


def kernels_name(module):
    """"fast" or "reference" for a layer's module."""
    return next(name for name, package in _PACKAGES.items() if module.__name__ == package)
