"""The ``spk`` command line: a click group whose sub-commands live in ``spk/bin``.

Each module in ``spk/bin`` defines one click command or group and does nothing but
parse options and call the library.
"""

import importlib

import click

from spk.log import setup_logging

# (module under spk.bin, attribute holding the click command or group)
_COMMANDS = [
    ("data", "data"),
    ("score", "score"),
    ("report", "report"),
    ("report", "compare"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log debug messages too.")
@click.version_option(package_name="spk")
def main(verbose: bool) -> None:
    """spk: speaker verification and identification with RNN embedders."""
    setup_logging(verbose)


for _module, _attr in _COMMANDS:
    main.add_command(getattr(importlib.import_module(f"spk.bin.{_module}"), _attr))
