"""The package's version, written once: `pyproject.toml` reads it (`[tool.setuptools.dynamic]`),
`cnntheory.__version__` re-exports it, and a test holds `CITATION.cff` to it."""

__version__ = "0.5.0"
