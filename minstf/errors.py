"""Errors a user can cause, each with its own exit code for the command line.

The CLI turns any MinstfError into a one-line message on stderr and exits with
`exit_code`; anything else is a bug and keeps its traceback.
"""


class MinstfError(Exception):
    exit_code = 1


class BadInput(MinstfError):
    """An input image (or argument) that minstf cannot use."""
    exit_code = 3


class CorruptFile(MinstfError):
    """A .mstf file that is truncated, damaged, or not a .mstf file at all."""
    exit_code = 4


class WrongWeights(MinstfError):
    """A .mstf file made with other weights than the ones given."""
    exit_code = 5


class WeightsError(MinstfError):
    """A weight file or checkpoint that is malformed, unsafe or does not fit the model."""
    exit_code = 6


class DecoderMismatch(MinstfError):
    """The decoder's symbols disagree with the encoder's (CRC check): the entropy
    parameters drifted between the machines or backends that encoded and decoded."""
    exit_code = 7


class OutputExists(MinstfError):
    """Refusing to overwrite an existing file without --force."""
    exit_code = 8
