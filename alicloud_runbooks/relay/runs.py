"""Which flow run an Alibaba event belongs to, so the relay can relate it to that run.

A runbook tags its flow run with each invocation it starts (`acs.ecs.invocation.<id>`); the
relay finds the run by that tag and adds it as a related resource (role `flow-run`). In the
Prefect UI an Alibaba event then leads to its run and the run's event feed shows the events
that settled it; a suspended run's resume automation matches on it. The event's id is
untouched, so a redelivered event is still dropped by Prefect as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import httpx

from alicloud_runbooks.events import names

log = logging.getLogger("alicloud_runbooks.relay")

FOUND_TTL = 3600.0  # a run's invocations do not move to another run
MISSING_TTL = 2.0  # a run tags itself just after RunCommand: look again soon
CACHE_SIZE = 10_000
LOOKUP_TIMEOUT = 2.0


def run_tag(invoke_id: str) -> str:
    return names.invocation_resource(invoke_id)


class RunDirectory:
    def __init__(self, client: httpx.AsyncClient, api_url: str) -> None:
        self._client = client
        self._url = api_url.rstrip("/") + "/flow_runs/filter"
        self._cache: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._asking: dict[str, asyncio.Future[str | None]] = {}

    async def run_of(self, invoke_id: str) -> str | None:
        cached = self._cache.get(invoke_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        if invoke_id in self._asking:  # a burst of one invocation's events asks once
            return await asyncio.shield(self._asking[invoke_id])
        asking = asyncio.get_running_loop().create_future()
        self._asking[invoke_id] = asking
        try:
            run_id = await self._look_up(invoke_id)
        except BaseException as exc:
            asking.set_exception(exc)
            asking.exception()  # retrieved: the waiters, if any, get it too
            raise
        else:
            asking.set_result(run_id)
        finally:
            del self._asking[invoke_id]
        return run_id

    async def _look_up(self, invoke_id: str) -> str | None:
        now = time.monotonic()
        body = {
            "flow_runs": {"tags": {"all_": [run_tag(invoke_id)]}},
            "sort": "START_TIME_DESC",
            "limit": 1,
        }
        response = await self._client.post(self._url, json=body, timeout=LOOKUP_TIMEOUT)
        response.raise_for_status()
        found = response.json()
        run_id = str(found[0]["id"]) if found else None
        self._cache[invoke_id] = (run_id, now + (FOUND_TTL if run_id else MISSING_TTL))
        self._cache.move_to_end(invoke_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return run_id

    async def link(self, events: list[dict[str, Any]]) -> None:
        """Relate each event of a known invocation to its run; best effort: an event is never
        refused or delayed long because the lookup failed."""
        prefix = names.invocation_resource("")
        for event in events:
            invoke_ids = [
                r["prefect.resource.id"].removeprefix(prefix)
                for r in event["related"]
                if r["prefect.resource.id"].startswith(prefix)
            ]
            if not invoke_ids:
                continue
            try:
                run_id = await self.run_of(invoke_ids[0])
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.debug("could not look up the run of %s: %s", invoke_ids[0], exc)
                continue
            if run_id is not None:
                event["related"].append(
                    {
                        "prefect.resource.id": f"prefect.flow-run.{run_id}",
                        "prefect.resource.role": "flow-run",
                    }
                )
