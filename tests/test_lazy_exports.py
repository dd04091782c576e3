"""The packages' public names load their modules on first use, and are the objects those modules define."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import st_contrast
import st_contrast.callbacks
import st_contrast.data

PACKAGES = [st_contrast, st_contrast.callbacks, st_contrast.data]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda package: package.__name__)
def test_every_public_name_is_the_object_its_module_defines(package):
    lazy = package._LAZY_NAMES
    assert set(lazy) <= set(package.__all__) and dir(package) == sorted(package.__all__)
    for name, module in lazy.items():
        assert getattr(package, name) is getattr(importlib.import_module(f"{package.__name__}.{module}"), name)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda package: package.__name__)
def test_an_unknown_name_is_an_attribute_error_naming_the_package(package):
    with pytest.raises(AttributeError, match=rf"module '{package.__name__}' has no attribute 'NoSuchName'"):
        package.NoSuchName  # noqa: B018
    assert not hasattr(package, "NoSuchName")


def test_importing_the_packages_loads_neither_torch_nor_sentence_transformers():
    probe = (
        "import sys, st_contrast, st_contrast.callbacks, st_contrast.data; "
        "print(st_contrast.__version__, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [st_contrast.__version__, "False", "False"]
    assert "__version__" in dir(st_contrast)


def test_a_name_equal_to_its_module_is_refused():
    """Importing ``package.batch_stats`` would make the package's ``batch_stats`` that module, not the function."""
    from st_contrast.lazy_exports import lazy_exports

    with pytest.raises(ValueError, match=r"st_contrast.callbacks: .*\['batch_stats'\]"):
        lazy_exports("st_contrast.callbacks", {"BatchStats": "batch_stats", "batch_stats": "batch_stats"})
