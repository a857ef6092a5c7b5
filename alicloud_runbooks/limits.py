"""Instances running commands at once across runs: a Prefect global concurrency limit
(design contract 5), so that fleet runs together stay within the API's limits.

Slots are taken with a lease (`prefect.concurrency.asyncio.concurrency`, strict): a run that
dies without releasing them loses them when its lease expires, instead of holding them for
ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from alicloud_runbooks.text import plural

WAIT_NOTICE_SECONDS = 5.0
LEASE_SECONDS = 300.0


async def prepare_limit(
    name: str, wanted: int | None, log: logging.Logger | logging.LoggerAdapter
) -> int | None:
    """The size of the limit `name` on the Prefect server, created strict with `wanted` slots
    if missing; None when there is none and none is wanted. An existing limit keeps its size
    (it is shared: an operator changes it in the UI, not each run)."""
    async with get_client() as client:
        try:
            existing = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            if wanted is None:
                return None
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=wanted)
                )
            except ObjectAlreadyExists:
                # Another run created it a moment ago.
                existing = await client.read_global_concurrency_limit_by_name(name)
            else:
                log.info(
                    "Created the global concurrency limit %r: %s at once across runs",
                    name,
                    plural(wanted, "instance"),
                )
                return wanted
    if not existing.active:
        log.warning(
            "The global concurrency limit %r is inactive: Prefect does not enforce it, so this "
            "run is not limited across runs. Activate it (UI: Concurrency) to share it",
            name,
        )
        return None
    if existing.limit < 1:
        raise ValueError(
            f"the global concurrency limit {name!r} has {existing.limit} slots: no instance "
            "could ever start. Give it at least 1 (UI: Concurrency) or name another limit"
        )
    if wanted is not None and wanted != existing.limit:
        log.warning(
            "The global concurrency limit %r already exists with %d slots; this run's "
            "max_concurrency=%d is not applied (change the limit itself to change it for "
            "every run)",
            name,
            existing.limit,
            wanted,
        )
    return existing.limit


@asynccontextmanager
async def slots(
    name: str | None,
    count: int,
    holder: UUID | None,
    log: logging.Logger | logging.LoggerAdapter,
) -> AsyncIterator[None]:
    """Hold `count` slots of the limit for the block (nothing when `name` is None); says so
    in the log when other runs make this one wait."""
    if name is None:
        yield
        return
    lease_holder = ConcurrencyLeaseHolder(type="flow_run", id=holder) if holder else None

    async def notice() -> None:
        await asyncio.sleep(WAIT_NOTICE_SECONDS)
        log.info(
            "Waiting for %d slot%s of the global concurrency limit %r (other runs hold it)",
            count,
            "" if count == 1 else "s",
            name,
        )

    waiting = asyncio.create_task(notice())
    try:
        async with concurrency(
            name, occupy=count, strict=True, holder=lease_holder, lease_duration=LEASE_SECONDS
        ):
            waiting.cancel()
            yield
    finally:
        waiting.cancel()
