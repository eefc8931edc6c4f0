"""AetherPro Omni Voice Gateway."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aetherpro-voice-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
