"""Rendering deployment files for a virtualenv (being written)."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``deploy`` sub-commands to ``parser``."""
    parser.set_defaults(func=lambda args: parser.error("not available yet"))
