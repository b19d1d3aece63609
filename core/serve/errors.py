"""The one error type the server answers with: OpenAI's error shape and an HTTP status."""

from __future__ import annotations

from typing import Any

from polysteer.errors import PolysteerError

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
               503: "server_error"}


class APIError(PolysteerError):
    """A request the server refuses: ``status`` (4xx, or 503 while shutting down) and the body
    ``{"error": {"message", "type", "param", "code"}}`` that OpenAI clients understand."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 for a value that cannot work, naming the field (``param``)."""
    return APIError(400, message, code=code, param=param)
