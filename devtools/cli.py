"""Command-line options the commands that start servers share."""

import argparse


def env_item(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from the command line (an argparse ``type``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_env_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--env KEY=VALUE`` (repeatable): the server environment a run overrides."""
    parser.add_argument(
        "--env",
        type=env_item,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help_text,
    )
