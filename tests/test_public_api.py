from __future__ import annotations

import importlib.machinery
import os

import pytest

import dragonpy
from dragonpy import _identity, _pieces
from dragonpy._scheduler import _core, _evaluator, _model
from dragonpy._storage import _keys


def test_every_exported_name_exists() -> None:
    missing = [name for name in dragonpy.__all__ if not hasattr(dragonpy, name)]
    assert missing == []


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name in dir(dragonpy)
        if not name.startswith("_")
        and not isinstance(getattr(dragonpy, name), type(os))
    }
    assert public == set(dragonpy.__all__) - {"__version__"}


@pytest.mark.skipif(
    os.environ.get("DRAGONPY_EXPECT_COMPILED") != "1",
    reason="the compiled build is tested by nox -s tests",
)
def test_hot_modules_are_compiled() -> None:
    for module in (_identity, _pieces, _keys, _core, _evaluator, _model):
        assert module.__file__ is not None
        assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
