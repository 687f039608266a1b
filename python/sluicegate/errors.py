"""The gateway's own error responses, in the shape of the API the client called."""

from __future__ import annotations

import orjson

JSON_HEADERS = [("content-type", "application/json")]

# Anthropic error type for each status the gateway produces itself.
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
    529: "overloaded_error",
}

OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("permission_error", "model_not_allowed"),
    404: ("not_found_error", "model_not_found"),
    405: ("invalid_request_error", None),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("api_error", "upstream_error"),
    503: ("api_error", "unavailable"),
    504: ("api_error", "upstream_timeout"),
}


def anthropic_error(status: int, message: str, error_type: str | None = None) -> bytes:
    etype = error_type or ANTHROPIC_TYPES.get(status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})


def openai_error(status: int, message: str, error_type: str | None = None) -> bytes:
    etype, code = OPENAI_TYPES.get(status, ("api_error", None))
    return orjson.dumps(
        {"error": {"message": message, "type": error_type or etype, "param": None, "code": code}}
    )


class GatewayError(Exception):
    """An error the gateway answers itself; rendered in the calling API's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or []

    def body(self, api: str) -> bytes:
        if api == "openai":
            return openai_error(self.status, self.message, None)
        return anthropic_error(self.status, self.message, self.error_type)

    @property
    def kind(self) -> str:
        return self.error_type or ANTHROPIC_TYPES.get(self.status, "api_error")
