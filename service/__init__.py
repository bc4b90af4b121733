"""modelgate: the gateway package."""

from importlib.metadata import PackageNotFoundError, version

try:  # pyproject.toml is the one source; installed metadata carries it
    __version__ = version("modelgate")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
