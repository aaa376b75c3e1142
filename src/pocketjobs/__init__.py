"""pocketjobs: a PocketBase-style application kernel with a durable job queue plugin."""

from pocketjobs.app import App

__all__ = ["App", "__version__"]

__version__ = "0.1.0"
