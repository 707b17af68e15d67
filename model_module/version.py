"""What the link calls itself to the servers it talks to."""

from importlib.metadata import PackageNotFoundError, version

try:
    USER_AGENT = f"arkq/{version('arkq')}"
except PackageNotFoundError:  # run from a source tree that was never installed
    USER_AGENT = "arkq"
