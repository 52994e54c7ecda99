"""Read what agents sent the way applications do: IoT Time Series, IoT TS Bulk, import jobs (client.py)."""

from .client import AppCredentials, ReadClient, ReadError, iso, render, run_sync

__all__ = ["AppCredentials", "ReadClient", "ReadError", "iso", "render", "run_sync"]
