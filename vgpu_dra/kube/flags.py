"""The --kubeconfig flag every process that talks to the API server takes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_kubeconfig_argument(p: argparse.ArgumentParser, *, documented: bool = True) -> None:
    """--kubeconfig, default $KUBECONFIG; unset means the in-cluster service account.
    `documented=False` leaves out the help text (the legacy commands never had one)."""
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("KUBECONFIG") or None,
        help="default: $KUBECONFIG, else in-cluster service account" if documented else None,
    )
