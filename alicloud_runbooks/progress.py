"""A run's progress in the Prefect UI: one progress artifact, moved as instances settle.

Bounded: each settled instance only marks the progress; the artifact is written at most once
per `interval` seconds and only when it moved by `step` percent or more, plus at each batch's
end and at the finish. 1,000 instances cost about a hundred writes, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from uuid import UUID

from prefect.artifacts import (
    acreate_progress_artifact,
    aupdate_progress_artifact,
    update_progress_artifact,
)


class Progress:
    def __init__(
        self,
        total: int,
        key: str,
        log: logging.Logger | logging.LoggerAdapter,
        interval: float = 1.0,
        step: float = 1.0,
    ) -> None:
        self.total = total
        self.key = key
        self.log = log
        self.interval = interval
        self.step = step
        self.done = 0
        self.note = ""
        self.writes = 0
        self.artifact_id: UUID | None = None
        self._written: float | None = None
        self._written_at = 0.0
        self._ticker: asyncio.Task[None] | None = None

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 2)

    def mark(self, done: int, note: str | None = None) -> None:
        """Record where the run is; cheap, called for every settled instance."""
        self.done = done
        if note is not None:
            self.note = note

    async def start(self, note: str) -> None:
        self.note = note
        try:
            self.artifact_id = await acreate_progress_artifact(
                self.percent, key=self.key, description=note
            )
        except Exception as exc:
            self.log.warning("Could not create the progress artifact: %s", exc)
            return
        self.writes += 1
        self._written, self._written_at = self.percent, time.monotonic()
        self._ticker = asyncio.create_task(self._tick())

    async def flush(self, force: bool = False) -> None:
        """Write the progress if it moved by `step` since the last write, at least `interval`
        after it; `force` writes now (a batch's end, the finish)."""
        if self.artifact_id is None:
            return
        percent = self.percent
        if not force:
            if self._written is not None and abs(percent - self._written) < self.step:
                return
            if time.monotonic() - self._written_at < self.interval:
                return
        try:
            await aupdate_progress_artifact(self.artifact_id, percent, description=self.note)
        except Exception as exc:
            self.log.warning("Could not update the progress artifact: %s", exc)
            return
        self.writes += 1
        self._written, self._written_at = percent, time.monotonic()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def close(self, note: str) -> None:
        """The final write (100 % when every target is settled or known not to start)."""
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        self.note = note
        await self.flush(force=True)

    def abandon(self, note: str) -> None:
        """The last write of a run that is ending early, made without awaiting: a cancelled
        flow (its timeout, a cancellation) cancels every await from here on."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.artifact_id is None:
            return
        try:
            update_progress_artifact(
                self.artifact_id,
                self.percent,
                description=note,
                _sync=True,  # type: ignore[call-arg]
            )
        except Exception as exc:
            self.log.warning("Could not update the progress artifact: %s", exc)
            return
        self.writes += 1
