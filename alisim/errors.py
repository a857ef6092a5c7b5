"""Errors in Alibaba Cloud's own shapes, so the official SDKs raise their real exceptions."""

from __future__ import annotations


class ApiError(Exception):
    """An OpenAPI error: JSON `{Code, Message, RequestId, HostId}` with an HTTP status."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        *,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_ms = retry_after_ms


def missing_parameter(name: str) -> ApiError:
    return ApiError(
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory '
        "for processing this request is not supplied.",
    )


def invalid_parameter(name: str, detail: str = "") -> ApiError:
    message = f'The specified parameter "{name}" is not valid.'
    if detail:
        message = f"{message} {detail}"
    return ApiError("InvalidParameter", message)


class OssError(Exception):
    """An OSS error: XML `<Error>` body with the real service's status and code."""

    def __init__(self, code: str, message: str, status: int = 400, **details: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details
