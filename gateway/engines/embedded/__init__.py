"""Embedded CPU engine: real models that ship inside PyPI packages, run in-process off the event loop."""
