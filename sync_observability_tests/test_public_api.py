"""The public API: every name in ``sync_observability.__all__`` imports, and is what it says."""

from __future__ import annotations

import importlib
import inspect

import sync_observability


def test_every_public_name_imports_as_the_object_the_package_exports() -> None:
    names = sync_observability.__all__
    assert len(set(names)) == len(names)
    for name in names:
        namespace: dict[str, object] = {}
        exec(f"from sync_observability import {name}", namespace)
        exported = namespace[name]
        assert exported is getattr(sync_observability, name), name
        if inspect.isclass(exported) or inspect.isfunction(exported):
            # Re-exported, not copied: the object its own module defines.
            home = importlib.import_module(exported.__module__)
            assert getattr(home, exported.__qualname__) is exported, name


def test_a_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from sync_observability import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(sync_observability.__all__)
