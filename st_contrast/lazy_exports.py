"""Public names of a package that load their modules on first use (PEP 562 module ``__getattr__``).

Importing such a package is cheap: a name's module (and what it imports: torch, Sentence Transformers) loads only
when the name is read, so a reader of run logs or data never pays for the training stack.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``, whose public ``names`` load on first use.

    Args:
        package: The package's ``__name__``.
        names: Each public name and the module that defines it, relative to ``package`` (``"flops"`` for
            ``package.flops``).

    Returns:
        ``(__getattr__, __dir__)``, to assign at the package's top level; ``dir(package)`` lists its ``__all__``.

    Example::

        __getattr__, __dir__ = lazy_exports(__name__, {"estimate_flops": "flops"})
    """

    shadowed = sorted(name for name, module in names.items() if name == module.rsplit(".", 1)[-1])
    if shadowed:  # importing package.NAME would set the package's attribute NAME to that module
        raise ValueError(f"{package}: public names equal to the module that defines them: {shadowed}")

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(getattr(sys.modules[package], "__all__", names))

    return __getattr__, __dir__
