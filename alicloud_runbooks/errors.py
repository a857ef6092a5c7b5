"""One clear error per failure a runbook user meets, instead of an SDK traceback wall.

`cloud_call` wraps each SDK call: what was being done, Alibaba's code and message, the request
id for a support ticket, and what to do. Secrets never reach these messages: they carry only
the code, the message and the request id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from Tea.exceptions import TeaException, UnretryableException

T = TypeVar("T")

_ADVICE = {
    "InvalidAccessKeyId.NotFound": "the AccessKey ID does not exist: check the credentials block",
    "InvalidAccessKeyId.Inactive": "the AccessKey is disabled: enable it or use another one",
    "SignatureDoesNotMatch": "the AccessKey secret is wrong: check the credentials block",
    "IncompleteSignature": "the AccessKey secret is wrong: check the credentials block",
    "InvalidSecurityToken.Expired": "the STS token has expired: issue a new one",
    "InvalidSecurityToken.Malformed": "the STS token is malformed: copy it again",
    "InvalidSecurityToken.MismatchWithAccessKey": "the STS token belongs to another AccessKey",
    "Forbidden.RAM": "the RAM user lacks a permission for this action: grant it",
    "Throttling": "the API kept throttling after the SDK's retries: run fewer at once",
    "Throttling.User": "the API kept throttling after the SDK's retries: run fewer at once",
    "Throttling.Api": "the API kept throttling after the SDK's retries: run fewer at once",
    "InvalidInstanceId.NotFound": "an instance id does not exist in this region",
    "InvalidInstance.NotFound": "an instance id does not exist in this region",
    "InvalidRegionId.NotFound": "the region id is wrong: check the credentials block",
}


TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "Throttling.User",
        "Throttling.Api",
        "ServiceUnavailable",
        "InternalError",
        "EndpointUnreachable",
    }
)


class AlibabaCloudError(RuntimeError):
    """An Alibaba Cloud call failed; the message says what, why and what to do."""

    def __init__(self, doing: str, code: str, message: str, request_id: str | None = None):
        self.doing = doing
        self.code = code
        self.message = message
        self.request_id = request_id
        advice = _ADVICE.get(code)
        text = f"{doing} failed: {code}: {message}"
        if advice:
            text += f" ({advice})"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text)


def is_transient(exc: Exception) -> bool:
    """Whether trying again later may succeed: throttling, an endpoint down, a server error.
    Wrong keys, missing permissions and unknown resources are not."""
    if isinstance(exc, AlibabaCloudError):
        return exc.code in TRANSIENT_CODES
    return not isinstance(exc, ValueError | TypeError | KeyError)


def translate(doing: str, exc: Exception) -> AlibabaCloudError:
    if isinstance(exc, AlibabaCloudException):
        message = (exc.message or "").split(" request id:")[0]
        message = message.removeprefix(f"code: {exc.status_code}, ")
        # Signature errors append the server's string to sign: noise for the reader.
        message = message.split(" server string to sign")[0].splitlines()[0] if message else ""
        return AlibabaCloudError(doing, exc.code or "Unknown", message, exc.request_id)
    if isinstance(exc, UnretryableException):
        cause = exc.inner_exception or exc
        if isinstance(cause, CredentialException):
            return translate(doing, cause)
        detail = getattr(cause, "message", None) or str(cause)
        if "Connection refused" in detail or "Failed to establish" in detail:
            detail = "connection refused: the endpoint is down or the address is wrong"
        elif "timed out" in detail.lower():
            detail = "the endpoint did not answer in time"
        return AlibabaCloudError(doing, "EndpointUnreachable", detail)
    if isinstance(exc, TeaException):
        return AlibabaCloudError(doing, exc.code or "Unknown", exc.message or str(exc))
    if isinstance(exc, CredentialException):
        return AlibabaCloudError(
            doing,
            "NoCredentials",
            "no credentials found: save an access key pair in the credentials block or set "
            "ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        )
    raise exc


@contextmanager
def cloud_call(doing: str) -> Iterator[None]:
    """Turn SDK exceptions inside the block into one `AlibabaCloudError`, without the chain."""
    try:
        yield
    except (TeaException, CredentialException) as exc:
        raise translate(doing, exc) from None


def call(doing: str, fn: Callable[[], T]) -> T:
    with cloud_call(doing):
        return fn()


TASK_LOGGER = "prefect.task_runs"


class OneLineTaskFailures(logging.Filter):
    """Prefect logs a failed task's exception with its traceback, then the flow run logs the
    same exception again with another when it propagates: two tracebacks for one failure. An
    `AlibabaCloudError` already says what, why and what to do, so the task's record keeps its
    one line and the flow run's keeps Prefect's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, AlibabaCloudError) and str(record.msg).startswith("Task run failed"):
            record.exc_info = None
            record.exc_text = None
        return True


def log_task_failures_on_one_line() -> None:
    """Install `OneLineTaskFailures` on Prefect's task run logger (once)."""
    logger = logging.getLogger(TASK_LOGGER)
    if not any(isinstance(f, OneLineTaskFailures) for f in logger.filters):
        logger.addFilter(OneLineTaskFailures())
