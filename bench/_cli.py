"""Shared command-line checks of the bench subcommands."""

from __future__ import annotations

import argparse
import csv
import os

import torch


def resolve_device(name: str | None, prog: str) -> str:
    """``--device``: the name given (exiting when it is cuda and CUDA is not available), else cuda if available."""
    if name:
        if name == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"{prog}: --device cuda but CUDA is not available")
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_threads(ap: argparse.ArgumentParser, threads: int | None) -> None:
    """``--threads`` (None: torch's choice) must be a number of this machine's cores."""
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        ap.error(f"--threads must be in [1, {cores}] (the cores of this machine), got {threads}")


def check_output_dir(ap: argparse.ArgumentParser, path: str | None) -> None:
    """``--output-dir`` must not name a file (checked with the other options, before any work)."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        ap.error(f"--output-dir {path} is a file; choose a folder")


def prepare_output_dir(ap: argparse.ArgumentParser, path: str | None) -> None:
    """Create ``--output-dir`` before anything is measured (a run that fails only at its end wastes
    its measurements), or exit through ``ap.error`` naming why it cannot be written to."""
    if not path:
        return
    check_output_dir(ap, path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        ap.error(f"--output-dir {path}: cannot create the folder: {e.strerror or e}")
    if not os.access(path, os.W_OK | os.X_OK):
        ap.error(f"--output-dir {path} is not writable by this user")


def write_csv_rows(path: str, rows: list[dict], fields=None) -> None:
    """``rows`` (dicts) as a CSV file: the columns ``fields``, else the first row's keys, in order."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields or rows[0]))
        w.writeheader()
        w.writerows(rows)
