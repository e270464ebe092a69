"""The package version, stated once: setup.py, the docs and ``mq_transaction.__version__`` read it here."""

__version__ = "0.2.0"
