"""The southgate console: web pages under /console/ to see agents and plot what they sent.

For people on the machine southgate runs on: every URL but the login page needs the admin token (or the
session that a login with it, or the one-time link printed at start, opened). Data that grow with what agents
sent are read through a separate read-only SQLite connection in a worker thread, so a long chart query never
stalls the agents' requests.
"""

from __future__ import annotations

from aiohttp import web

from .auth import AUTH_KEY, ConsoleAuth, require_login
from .views import PREFIX, add_routes

__all__ = ["PREFIX", "login_link", "setup"]


def setup(app: web.Application) -> None:
    """Mount the console on southgate's application (the one hook in app.make_app)."""
    console = web.Application(middlewares=[require_login])
    console[AUTH_KEY] = ConsoleAuth()
    add_routes(console)
    app.add_subapp(PREFIX, console)
    app[CONSOLE_KEY] = console


CONSOLE_KEY: web.AppKey[web.Application] = web.AppKey("console", web.Application)


def login_link(app: web.Application, base_url: str) -> str:
    """A link that logs one browser in once (printed by `serve`; used, it is worth nothing)."""
    auth = app[CONSOLE_KEY][AUTH_KEY]
    return f"{base_url}{PREFIX}/login?key={auth.new_link_key()}"
