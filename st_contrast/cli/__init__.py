"""The ``st-contrast`` command line."""

from __future__ import annotations

from st_contrast.cli.main import main

__all__ = ["main"]
