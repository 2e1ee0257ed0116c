"""The ``dragonpy`` and ``dragonpy-daemon`` command lines."""

import sys

# httpx imports its own command-line client (click, rich, pygments: 80 ms, a sixth
# of a small download) whenever click is installed, as it is here; these programs
# never run it. A module marked absent makes httpx skip it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
