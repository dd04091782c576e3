"""Version compatibility of the libraries st_contrast stands on, and every private hook it uses in them.

**Adapter support.** transformers' adapter integration (``model.add_adapter``, adapter-only ``save_pretrained``, and
the loading of a saved adapter by plain ``SentenceTransformer(dir)``) refuses to run when the installed peft is older
than the floor that transformers release declares (``MIN_PEFT_VERSION``). Every transformers release may raise that
floor before peft publishes a release that meets it, so a fresh install can resolve a pair that installs fine
and fails at the first LoRA call. :func:`adapter_support_problem` reads the floor of the installed
transformers, compares it with the installed peft, and says what to install instead.

**Upstream hooks.** st_contrast reaches into private or undocumented parts of sentence-transformers, transformers,
accelerate, mteb, peft, datasets and torch in a few places (ST's flattened text path, its pooling internals, the
trainer's checkpoint hooks...). Every such access goes through a small function in ``hooks.py``, or, for methods that
st_contrast overrides and for attributes read inside those libraries, is listed in :data:`HOOKS`
(``registry.py``). :func:`hook_problem` checks one entry against the installed release (``tests/test_compat.py`` checks
them all), so a release that removes or changes a hook fails with a message that names it. Adapter support lives in
``versions.py``.
"""

from __future__ import annotations

from st_contrast.compat import hooks, registry, versions
from st_contrast.compat.hooks import *  # noqa: F403 (each submodule's __all__ names its public surface)
from st_contrast.compat.registry import *  # noqa: F403
from st_contrast.compat.versions import *  # noqa: F403

__all__ = [*versions.__all__, *hooks.__all__, *registry.__all__]
