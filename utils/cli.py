"""What the command-line programs share: the model-source arguments, one way to answer a
user mistake (one line on stderr, exit status 2) while a genuine bug keeps its traceback."""

from __future__ import annotations

import argparse
import functools
import re
import sys
from typing import Callable, Optional, Sequence

from configs.errors import UserError
from configs.loader import build_parser

USER_ERROR_STATUS = 2
Main = Callable[[Optional[Sequence[str]]], int]


def describe(doc: Optional[str]) -> str:
    """A program's ``--help`` description: its docstring's first paragraph, whole (not cut at
    the first line break), with the reST double backticks dropped."""
    first = (doc or "").strip().split("\n\n", 1)[0]
    return re.sub(r"``([^`]*)``", r"\1", " ".join(first.split()))


def add_model_source(parser: argparse.ArgumentParser, flag: Optional[str] = None, required: bool = True) -> None:
    """The weights to use (a run folder, a checkpoint or CLIP weights; positional ``source``
    unless ``flag`` names an option, ``required`` unless the program has another source),
    ``--config``, ``--which`` and ``key=value`` overrides."""
    help_text = "run folder, checkpoint file (ours or the reference's) or CLIP weights"
    if flag:
        parser.add_argument(flag, dest="source", required=required, default=None, help=help_text)
    else:
        parser.add_argument("source", metavar="SOURCE", help=help_text)
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML config (default: the run folder's config.yaml, else the defaults)",
    )
    parser.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of a run folder")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.epilog = parser.epilog or build_parser().epilog


def report_user_errors(main: Main) -> Main:
    """Wrap a program's ``main(argv) -> int``: a :class:`UserError` (bad config value, missing
    or unusable weights, data or run folder) becomes ``<program>: error: <message>`` on stderr
    and exit status 2; any other exception propagates with its traceback."""

    @functools.wraps(main)
    def wrapper(argv: Optional[Sequence[str]] = None) -> int:
        try:
            return main(argv)
        except UserError as error:
            program = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "fmfa"
            sys.stderr.write(f"{program}: error: {error}\n")
            return USER_ERROR_STATUS

    return wrapper
