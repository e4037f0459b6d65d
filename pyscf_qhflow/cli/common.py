"""Arguments and model loading shared by the subcommands that run a model on .xyz files."""
from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--verbose`` (PySCF's verbosity)."""
    parser.add_argument("--model", default="default",
                        help="'default' (shipped weights) or a checkpoint path")
    parser.add_argument("--verbose", type=int, default=0, help="PySCF verbosity")


def load_model_or_report(name: str, command: str):
    """The model, or None after printing why the file could not be found."""
    from ..checkpoint import load_model

    try:
        return load_model(name)
    except FileNotFoundError as err:
        print(f"qhflow {command}: {err}")
        return None
