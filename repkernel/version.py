"""The installed package version, one definition for ``repkernel.__version__`` and provenance."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("repkernel")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
