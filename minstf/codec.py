"""Images <-> .mstf files: the evaluation padding, the model, the container.

    encode:  uint8 (H, W, 3) -> float in [0, 1] -> centred zero padding to a multiple of 64
             -> model.compress -> bitstream.pack(header, z string, y string)
    decode:  bitstream.unpack -> check model and weights -> model.decompress
             -> crop the padding -> uint8 (H, W, 3)
"""
from dataclasses import dataclass

from . import bitstream
from .backend import to_device
from .errors import BadInput, CorruptFile, WrongWeights
from .image import PaddedRows, check_size, crop, eval_padding, pad, to_float, to_uint8
from .model import Compressed

AUTO_TILE_PIXELS = 1 << 22  # tile="auto" tiles padded images of more pixels than this (4.2 MP)
BAND_PIXELS = 1 << 20  # ... in bands of about this many pixels, at least MIN_BAND rows
MIN_BAND = 128


def tile_rows(tile, padded_size):
    """Image rows per band of g_a / g_s (docs/tiling.md) for `tile`: "auto", 0 / None (whole image)
    or a number of rows; None when the image runs whole."""
    Hp, Wp = padded_size
    if tile == "auto":
        if Hp * Wp <= AUTO_TILE_PIXELS:
            return None
        tile = max(MIN_BAND, BAND_PIXELS // Wp // 64 * 64)
    return int(tile) if tile and int(tile) < Hp else None


@dataclass
class EncodeStats:
    height: int
    width: int
    file_bytes: int
    payload_bytes: int  # z + y strings, as upstream counts them

    @property
    def bpp(self):
        return 8 * self.file_bytes / (self.height * self.width)

    @property
    def payload_bpp(self):
        return 8 * self.payload_bytes / (self.height * self.width)


def least_bits(model, padded_size):
    """(z bits, y bits): the least information in the symbols of an image padded to (Hp, Wp)
    (bitstream "Size claims"): z (1, H4 // 4, W4 // 4, N_z) with row = channel; y M * H4 * W4
    symbols of any row."""
    H4, W4 = (side // model.config.downsampling for side in padded_size)
    z_bits = (H4 // 4) * (W4 // 4) * float(model.eb_table.least_bits[:model.config.N_z].sum())
    return z_bits, model.config.M * H4 * W4 * float(model.gc_table.least_bits.min())


def _stage(progress, name):
    if progress is not None:
        progress(name)


def encode_image(model, image, portable=True, progress=None, tile="auto"):
    """uint8 (H, W, 3) -> (bytes of a .mstf file, EncodeStats).

    progress (optional): called with the name of each step as it begins (pad, analysis, hyperprior,
    slice 1/S ... S/S, pack), and None at the end.

    portable (the default, as in the CLI): the entropy parameters are computed in float64,
    so the file decodes on any machine and backend. portable=False computes them in float32
    (faster; for files decoded where they were made: see README "Determinism").

    tile: the analysis' band of image rows ("auto": bands above AUTO_TILE_PIXELS; 0: whole;
    a number of rows); the file does not depend on it but for float32 noise (docs/tiling.md).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype.name != "uint8":
        raise BadInput(f"expected an 8-bit RGB image (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    check_size(h, w)
    _stage(progress, "pad")
    ltrb = eval_padding(h, w, model.config.pad_multiple)
    x = PaddedRows(to_device(image, model.xp), ltrb)  # (1, 3, Hp, Wp), made band by band
    band = tile_rows(tile, x.shape[2:])
    if not band:
        x = pad(to_float(x.image), ltrb)  # (1, 3, H, W) -> (1, 3, Hp, Wp), whole
    c = model.compress(x, portable=portable, progress=progress, tile=band)  # analysis, hyperprior, slice 1/S ...
    _stage(progress, "pack")
    header = bitstream.Header(model_id=model.model, fingerprint=bitstream.fingerprint_of(model.fingerprint),
                              height=h, width=w, padding=ltrb, z_crc=c.z_crc, y_crcs=c.slice_crcs,
                              portable=portable)
    try:  # what the decoder checks (bitstream "Size claims"): never write a file it refuses
        bitstream.check_payload_claim(header, len(c.z_string), len(c.y_string),
                                      *least_bits(model, x.shape[2:]))
    except CorruptFile as err:
        raise BadInput(f"this image cannot be coded into a file minstf would read back ({err})") from None
    data = bitstream.pack(header, c.z_string, c.y_string, model.config.pad_multiple)
    _stage(progress, None)
    return data, EncodeStats(h, w, len(data), len(c.z_string) + len(c.y_string))


def read_header(data, model=None):
    """Validate a .mstf file (and, given a model, that it was made with its weights)."""
    multiple = model.config.pad_multiple if model is not None else 64
    header, z_string, y_string = bitstream.unpack(data, multiple=multiple)
    if model is not None:
        if header.model_id != model.model:  # "stf" or "cnn"
            raise WrongWeights(f"the file was made by model {header.model_id!r}, not {model.model!r}")
        bitstream.check_weights(header, bitstream.fingerprint_of(model.fingerprint))
        if header.num_slices != model.config.num_slices:  # only with forged fingerprints
            raise WrongWeights(f"the file has {header.num_slices} slices, the weights {model.config.num_slices}")
        bitstream.check_payload_claim(header, len(z_string), len(y_string),
                                      *least_bits(model, header.padded_size))
    return header, z_string, y_string


def decode_image(model, data, progress=None, tile="auto"):
    """bytes of a .mstf file -> (uint8 (H, W, 3), Header); progress and tile as for encode_image
    (tile: the synthesis' band of image rows)."""
    _stage(progress, "check header")
    header, z_string, y_string = read_header(data, model)
    Hp, Wp = header.padded_size
    d = model.config.downsampling
    c = Compressed(z_string, y_string, (Hp // d, Wp // d), header.z_crc, header.y_crcs, header.portable)
    x_hat = model.decompress(c, progress=progress, tile=tile_rows(tile, (Hp, Wp)))  # hyperprior, slice 1/S ..., synthesis: (1, 3, Hp, Wp) in [0, 1]
    _stage(progress, "crop")
    image = to_uint8(crop(x_hat, header.padding))
    _stage(progress, None)
    return image, header
