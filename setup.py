"""Build hook: compile the hot modules with mypyc.

Set DRAGONPY_PURE=1 to build a pure-Python wheel (for development only; tests in CI run
against the compiled build).
"""

import os

from setuptools import setup

# The modules on the hot paths: piece planning, digests, identity, store access and
# the scheduler's decisions (about twice as fast compiled; docs/benchmarks.md).
COMPILED = [
    "src/dragonpy/_identity.py",
    "src/dragonpy/_pieces.py",
    "src/dragonpy/_storage/_keys.py",
    "src/dragonpy/_scheduler/_model.py",
    "src/dragonpy/_scheduler/_evaluator.py",
    "src/dragonpy/_scheduler/_core.py",
]

if os.environ.get("DRAGONPY_PURE") == "1":
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3"))
