"""minstf: a readable NumPy/CuPy implementation of the STF learned image codec.

Zou, Song, Zhang, "The Devil Is in the Details: Window-based Attention for Image
Compression", CVPR 2022. See README.md for the public API.
"""
__version__ = "0.1.0"

from .codec import decode_image, encode_image  # noqa: E402,F401
from .config import STFConfig  # noqa: E402,F401
from .model import STF, Compressed  # noqa: E402,F401
from .zoo import load_model  # noqa: E402,F401
