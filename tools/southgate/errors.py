"""Error answers in the shapes the real service uses.

Agent management and data APIs answer `{"id": <uuid>, "message": ...}`; the OAuth endpoints answer
`{"id", "error", "error_description"}`. Messages never contain secrets or tokens.
"""

from __future__ import annotations

import json
import uuid

from aiohttp import web


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        oauth_error: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.oauth_error = oauth_error
        self.headers = headers or {}
        self.close = close

    def response(self) -> web.Response:
        if self.oauth_error:
            body = {"id": str(uuid.uuid4()), "error": self.oauth_error, "error_description": self.message}
        else:
            body = {"id": str(uuid.uuid4()), "message": self.message}
        resp = web.Response(
            status=self.status, text=json.dumps(body), content_type="application/json", headers=self.headers
        )
        if self.close:
            resp.force_close()
        return resp


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="southgate"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)
