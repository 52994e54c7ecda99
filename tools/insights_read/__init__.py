"""Read what agents sent the way applications do: IoT Time Series, IoT TS Bulk, import jobs, events
(client.py)."""

from .client import AppCredentials, ReadClient, ReadError, iso, render, render_events, run_sync

__all__ = ["AppCredentials", "ReadClient", "ReadError", "iso", "render", "render_events", "run_sync"]
