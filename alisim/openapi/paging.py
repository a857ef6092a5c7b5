"""The two pagination styles of ECS Describe* calls: PageNumber/PageSize and NextToken."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from alisim.errors import ApiError
from alisim.openapi.params import Params

T = TypeVar("T")


def _decode_token(token: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        raise ApiError(
            "InvalidNextToken.Malformed", "The specified NextToken is invalid.", 400
        ) from None


def paginate(
    items: Sequence[T], params: Params, *, default_size: int = 10, max_size: int = 100
) -> tuple[Sequence[T], dict[str, Any]]:
    """The page of `items` the request asks for, and the paging fields of the answer."""
    token = params.get("NextToken")
    max_results = params.get("MaxResults")
    if token is not None or max_results is not None:
        size = params.int("MaxResults", default_size, minimum=1, maximum=max_size) or default_size
        start = _decode_token(token) if token else 0
        page = items[start : start + size]
        end = start + len(page)
        next_token = (
            base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else ""
        )
        return page, {"NextToken": next_token, "TotalCount": len(items)}
    number = params.int("PageNumber", 1, minimum=1) or 1
    size = params.int("PageSize", default_size, minimum=1, maximum=max_size) or default_size
    start = (number - 1) * size
    return items[start : start + size], {
        "TotalCount": len(items),
        "PageNumber": number,
        "PageSize": size,
    }
