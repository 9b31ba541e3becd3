"""``models`` imports its public names on first use (so that the API can import models.presets
and models.images without torch): each name must still be what it says."""

from __future__ import annotations

import importlib
import pkgutil
import types

import models


def test_every_exported_name_resolves_and_no_submodule_shadows_one():
    submodules = {m.name for m in pkgutil.iter_modules(models.__path__)}
    assert not submodules & set(models.__all__)  # importing such a submodule would replace the name
    for name in sorted(submodules):
        importlib.import_module(f"models.{name}")
    for name in models.__all__:
        value = getattr(models, name)
        assert not isinstance(value, types.ModuleType) and value.__name__ == name, name
