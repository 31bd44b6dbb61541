"""Shared command-line checks of the bench subcommands."""

from __future__ import annotations

import argparse
import os


def prepare_output_dir(ap: argparse.ArgumentParser, path: str | None) -> None:
    """Create ``--output-dir`` before anything is measured (a run that fails only at its end wastes
    its measurements), or exit through ``ap.error`` naming why it cannot be written to."""
    if not path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        ap.error(f"--output-dir {path} is a file; choose a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        ap.error(f"--output-dir {path}: cannot create the folder: {e.strerror or e}")
    if not os.access(path, os.W_OK | os.X_OK):
        ap.error(f"--output-dir {path} is not writable by this user")
