"""The losses are public: explicit ``__all__`` in st_contrast.losses and lazy names on the package."""

from __future__ import annotations

import st_contrast
import st_contrast.losses


def test_every_loss_is_exported_lazily_from_the_package():
    for name in st_contrast.losses.__all__:
        assert getattr(st_contrast, name) is getattr(st_contrast.losses, name)
        assert name in dir(st_contrast)
