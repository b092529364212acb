"""The `minstf` command line: a thin layer of click commands over the library.

Every command is wrapped by `reports_errors`: a MinstfError (a problem with the
user's input) becomes one line `error: ...` on stderr and the error's exit code
(errors.py); anything else is a bug and keeps its traceback. Usage errors are
click's own (exit 2). Messages go to stderr, so stdout stays free for data.
"""
import functools
import sys

import click

from . import __version__
from .errors import MinstfError


def reports_errors(command):
    """Turn a MinstfError raised by `command` into `error: <message>` and its exit code."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MinstfError as err:
            click.echo("error: " + " ".join(str(err).split()), err=True)
            sys.exit(err.exit_code)
    return wrapper


@click.group()
@click.version_option(__version__, prog_name="minstf")
def main():
    """minstf: the STF learned image codec in NumPy/CuPy."""


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--name", help="A name stored in the weight file's metadata.")
@reports_errors
def convert(checkpoint, out, force, name):
    """Convert an upstream STF checkpoint (torch .pth.tar, or safetensors) to a minstf weight file.

    The configuration is inferred from the checkpoint's shapes; torch is not needed.
    """
    from .weights import convert as convert_weights

    w = convert_weights(checkpoint, out, force=force, name=name)
    n = sum(a.size for a in w.params.values())
    click.echo(f"wrote {out}: {len(w.params)} parameters ({n:,} values), "
               f"fingerprint {w.fingerprint[:16]}", err=True)
