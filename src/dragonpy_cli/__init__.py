"""The ``dragonpy`` command line."""
