"""The event waiter (design contract 3): wait for one Prefect event per key, without polling.

The stream is subscribed first (before the action), then the wait reads what is already
stored since the action, then it listens; it re-reads the store now and then (the live stream
drops events under bursts and cannot see events stored moments before it connected), and at
once after the stream reconnects. One subscription serves every key of the batch. An event
settles a key only if it belongs to the run (`Owner`, `EventWait.check`). What happens when an
event does not come is `alicloud_runbooks.reconciliation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from prefect.events.schemas.events import Event
from pydantic import BaseModel

from alicloud_runbooks.events import names
from alicloud_runbooks.reconciliation import (
    Answer,
    Reconciler,
    RetryPolicy,
    StragglerPolicy,
    reconcile_with_retry,
)
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.text import plural
from alicloud_runbooks.times import parse_time
from alicloud_runbooks.watch import Watch, WatchPolicy

logger = logging.getLogger(__name__)

PAGE_SIZE = 50  # the most /api/events/filter returns per page
STORE_READ_KEYS = 500  # resource ids per store read


class Settlement(BaseModel):
    key: str
    by: Literal["event", "reconciliation"]
    settled_at: datetime
    received_at: datetime | None = None
    source_time: datetime | None = None
    relayed_at: datetime | None = None
    """When the relay received the event (its Prefect `occurred`): precise to the millisecond
    where the source's own time may be whole seconds."""
    event_id: str | None = None
    live: bool | None = None
    data: dict[str, Any] = {}

    @property
    def reaction_ms(self) -> float | None:
        """Source event time to the moment the wait settled the key: the flow acting on it."""
        if self.source_time is None or self.by != "event":
            return None
        return (self.settled_at - self.source_time).total_seconds() * 1000

    @property
    def delivery_ms(self) -> float | None:
        """Source event time to its arrival in the flow's process (the event path alone)."""
        if self.source_time is None or self.received_at is None:
            return None
        return (self.received_at - self.source_time).total_seconds() * 1000


class WaitResult(BaseModel):
    name: str
    started_at: datetime
    finished_at: datetime
    settled: dict[str, Settlement]
    unsettled: list[str]
    pending: list[str] = []
    """Keys still being waited for when a holding wait returned (a durable wait suspends the
    run for them); empty when the wait ran to the end."""
    next_deadline: datetime | None = None
    last_known: dict[str, dict[str, Any]] = {}
    """For unsettled keys, the last non-final answer of the API (a command still Running)."""
    reconcile_error: str | None = None
    live_events: int = 0
    stored_events: int = 0
    store_reads: int = 0
    duplicates: int = 0
    foreign: dict[str, int] = {}
    """Events ignored because they do not belong to the run, counted by reason."""
    straggler_rounds: int = 0
    deadline_rounds: int = 0
    subscribed: bool = False

    def by(self, how: Literal["event", "reconciliation"]) -> list[str]:
        return [k for k, s in self.settled.items() if s.by == how]

    @property
    def ignored(self) -> int:
        return self.duplicates + sum(self.foreign.values())


@dataclass(frozen=True)
class Owner:
    """Where the run's events come from: its account and region, resolved once per run."""

    account_id: str | None
    region: str | None

    def mismatch(self, event: Event) -> str | None:
        account = event.resource.get(names.ACCOUNT_LABEL)
        if self.account_id and account != self.account_id:
            return f"account {account or 'missing'} is not the run's ({self.account_id})"
        region = event.resource.get(names.REGION_LABEL)
        if self.region and region != self.region:
            return f"region {region or 'missing'} is not the run's ({self.region})"
        return None


def _nothing_wrong(event: Event) -> str | None:
    return None


def _always(event: Event) -> bool:
    return True


class WaitControl:
    """Steers a wait that starts before its keys are due (`EventWait.control`): the
    OutputDelivered wait starts with the TaskCompleted wait, so a delivery event that comes
    before the last result settles its key at once, and each key's deadline runs from when
    its result came (`arm`). A key with nothing to wait for is `withdraw`n. Calls made
    before the wait starts are kept and applied when it does."""

    def __init__(self) -> None:
        self._waiting: _Waiting | None = None
        self._armed: set[str] = set()
        self._withdrawn: set[str] = set()
        self._stopped = False

    def arm(self, keys: Collection[str]) -> None:
        """These keys are due now: their deadlines start, reconciliation may ask for them."""
        fresh = set(keys) - self._armed - self._withdrawn
        self._armed |= fresh
        if self._waiting is not None and fresh:
            self._waiting.arm(fresh)

    def withdraw(self, keys: Collection[str]) -> None:
        """Nothing will come for these keys (no output to deliver): stop waiting for them."""
        fresh = set(keys) - self._withdrawn
        self._withdrawn |= fresh
        if self._waiting is not None and fresh:
            self._waiting.withdraw(fresh)

    def stop(self) -> None:
        """End the wait now, keys open or not (the run is suspending or failing)."""
        self._stopped = True
        if self._waiting is not None:
            self._waiting.stop()

    def bind(self, waiting: _Waiting) -> None:
        self._waiting = waiting
        if self._withdrawn:
            waiting.withdraw(self._withdrawn)
        if self._armed - self._withdrawn:
            waiting.arm(self._armed - self._withdrawn)
        if self._stopped:
            waiting.stop()


@dataclass
class EventWait:
    """What to wait for: `event` on each key's resource, optionally tied to related ids.

    Each key's first deadline is `timeout` seconds after the wait starts; reconciliation may
    move it (a command still running), never past `limit` (default: `timeout`)."""

    name: str
    event: str
    keys: Collection[str]
    resource_of: Callable[[str], str]
    since: datetime
    timeout: float
    limit: float | None = None
    related: Collection[str] = ()
    owner: Owner | None = None
    relevant: Callable[[Event], bool] = field(default=_always)
    """Whether an event of a key's resource is one this wait is for at all (a final delivery
    status, say). Others are passed on untouched: another wait may want them."""
    check: Callable[[Event], str | None] = field(default=_nothing_wrong)
    """Why an event this wait is for cannot be the run's (a command id that is not its
    invocation's): ignored, counted, logged as suspicious. None when it is fine."""
    stragglers: StragglerPolicy = field(default_factory=StragglerPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    origin: datetime | None = None
    """When the action happened: deadlines run from it (default: when the wait starts)."""
    hold: float | None = None
    """Return after this many seconds even with keys open (`WaitResult.pending`), so a
    durable wait can suspend the run instead of holding its process."""
    on_settle: Callable[[Settlement], None] | None = None
    """Told of each key as it settles (a fleet run starts the next instance, counts errors,
    moves its progress); it must not block, and what it raises is logged, not propagated."""
    control: WaitControl | None = None
    """With a control, keys start unarmed: events settle them, but no deadline runs, no store
    re-read or reconciliation asks for them, until `WaitControl.arm`; `timeout` then runs
    from the arming."""
    reread_every: float = 3.0
    subscribe_timeout: float = 5.0
    watch: WatchPolicy | None = field(default_factory=WatchPolicy)
    """Progress lines, the progress artifact and stall warnings (`alicloud_runbooks.watch`);
    None for none."""

    def __post_init__(self) -> None:
        self._by_resource = {self.resource_of(key): key for key in self.keys}

    def key_of(self, event: Event) -> str | None:
        """The key this event is for, or None when it is not this wait's to judge."""
        if event.event != self.event:
            return None
        key = self._by_resource.get(event.resource.id)
        if key is None:
            return None
        if self.related and not any(r.id in self.related for r in event.related):
            return None  # another invocation's, on the same instance
        return key if self.relevant(event) else None

    def not_ours(self, event: Event) -> str | None:
        return (self.owner.mismatch(event) if self.owner else None) or self.check(event)

    def filter(self, keys: Collection[str], since: datetime | None = None) -> EventFilter:
        now = datetime.now(UTC)
        return EventFilter(
            occurred=EventOccurredFilter(since=since or self.since, until=now + timedelta(days=1)),
            event=EventNameFilter(name=[self.event]),
            resource=EventResourceFilter(id=[self.resource_of(k) for k in keys]),
            related=EventRelatedFilter(id=list(self.related)) if self.related else None,
        )


def _source_time(event: Event) -> datetime | None:
    return parse_time((event.payload.get("acs") or {}).get("time"))


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


class _Waiting:
    """One wait in progress: a consumer of the stream and the rules of reconciliation."""

    def __init__(
        self,
        spec: EventWait,
        reconcile: Reconciler | None,
        log: logging.Logger | Any,
        stream: EventStream | None = None,
    ) -> None:
        self.spec = spec
        self.reconcile_fn = reconcile
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.started = datetime.now(UTC)
        # Deadlines run from the action (RunCommand), which may lie far back for a run resumed
        # after a suspend; holding (a durable wait) runs from now.
        start = self.loop.time()
        if spec.origin is not None:
            start -= max(0.0, (self.started - spec.origin).total_seconds())
        self.hold_until = self.loop.time() + spec.hold if spec.hold is not None else math.inf
        self.limit_at = start + max(spec.limit or spec.timeout, spec.timeout)
        self.open: set[str] = set(spec.keys)
        self.unarmed: set[str] = set(self.open) if spec.control is not None else set()
        self.deadline = dict.fromkeys(self.open, math.inf if self.unarmed else start + spec.timeout)
        self.armed_at = -math.inf
        self.stopped = False
        self.given_up: set[str] = set()
        self.rechecked: set[str] = set()
        self.settled: dict[str, Settlement] = {}
        self.last_known: dict[str, dict[str, Any]] = {}
        self.event_times: list[float] = []
        self.last_round_at = -math.inf
        self.straggler_rounds = self.deadline_rounds = 0
        self.reconcile_error: str | None = None
        self.live = self.stored = self.reads = self.duplicates = 0
        self.foreign: Counter[str] = Counter()
        self.ignored_ids: set[UUID] = set()
        self.gap = False
        self.listening = False
        self._wake = asyncio.Event()
        self.watch: Watch | None = None
        if spec.watch is not None:
            self.watch = Watch(
                spec.name,
                len(self.open),
                spec.watch,
                log,
                connected=lambda: stream is not None and stream.connected,
                in_run=FlowRunContext.get() is not None or TaskRunContext.get() is not None,
                clock=self.loop.time,
            )

    # ----- the stream's consumer
    def offer(self, event: Event, *, live: bool, received_at: datetime) -> bool:
        key = self.spec.key_of(event)
        if key is None:
            return False
        if self.watch is not None:
            self.watch.saw_event()
        reason = self.spec.not_ours(event)
        if reason is not None:
            if event.id not in self.ignored_ids:
                self.ignored_ids.add(event.id)
                if not self.foreign[reason]:
                    self.log.warning(
                        "%s: ignoring event %s for %s: %s", self.spec.name, event.id, key, reason
                    )
                self.foreign[reason] += 1
            return True
        if key not in self.open:
            self.duplicates += 1
            return True
        if live:
            self.live += 1
        else:
            self.stored += 1
        self.event_times.append(self.loop.time())
        self._settle(
            Settlement(
                key=key,
                by="event",
                settled_at=datetime.now(UTC),
                received_at=received_at,
                source_time=_source_time(event),
                relayed_at=event.occurred,
                event_id=str(event.id),
                live=live,
                data=dict(event.payload),
            )
        )
        return True

    def stream_gap(self) -> None:
        self.gap = True
        self._wake.set()

    def _settle(self, settlement: Settlement) -> None:
        self.open.discard(settlement.key)
        self.given_up.discard(settlement.key)
        self.last_known.pop(settlement.key, None)
        self.settled[settlement.key] = settlement
        self._wake.set()
        if self.spec.on_settle is not None:
            try:
                self.spec.on_settle(settlement)
            except Exception as exc:
                self.log.error(
                    "%s: on_settle failed for %s: %s", self.spec.name, settlement.key, exc
                )

    # ----- steered by a WaitControl
    def arm(self, keys: Collection[str]) -> None:
        now = self.loop.time()
        for key in keys:
            if key in self.unarmed:
                self.unarmed.discard(key)
                self.deadline[key] = now + self.spec.timeout
        # A key armed after a quiet spell is not a straggler yet: its event may be on its way.
        self.armed_at = now
        self._wake.set()

    def withdraw(self, keys: Collection[str]) -> None:
        for key in keys:
            if key in self.open:
                self.open.discard(key)
                self.unarmed.discard(key)
        self._wake.set()

    def stop(self) -> None:
        self.stopped = True
        self._wake.set()

    # ----- waiting
    def active(self) -> list[str]:
        return [k for k in self.open if k not in self.given_up and k not in self.unarmed]

    def awaiting_arming(self) -> bool:
        return any(k in self.open and k not in self.given_up for k in self.unarmed)

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake as soon as an event settles something (or the stream reopens)."""
        self._wake.clear()
        self.listening = True
        try:
            if seconds > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), seconds)
        finally:
            self.listening = False
        self._wake.clear()

    async def backoff(self, seconds: float, asked: Collection[str]) -> None:
        """Sleep `seconds` before a retry, unless events settle every asked key first."""
        end = self.loop.time() + seconds
        while (left := end - self.loop.time()) > 0 and any(k in self.open for k in asked):
            await self.pause(left)

    async def read_store(self, keys: Collection[str] | None = None) -> None:
        wanted = sorted(k for k in (keys if keys is not None else self.open) if k in self.open)
        if not wanted:
            return
        self.reads += 1
        try:
            async with get_client() as client:
                for start in range(0, len(wanted), STORE_READ_KEYS):
                    chunk = [k for k in wanted[start : start + STORE_READ_KEYS] if k in self.open]
                    if not chunk:
                        continue
                    page = await client.read_events(filter=self.spec.filter(chunk), limit=PAGE_SIZE)
                    while True:
                        now = datetime.now(UTC)
                        for event in page.events:
                            self.offer(event, live=False, received_at=now)
                        if not page.next_page or not any(k in self.open for k in chunk):
                            break
                        page = await client.read_events_page(page.next_page)
        except Exception as exc:
            self.log.warning(
                "%s: could not read stored events (%s: %s)",
                self.spec.name,
                type(exc).__name__,
                exc,
            )

    def stragglers(self, now: float) -> tuple[list[str], float]:
        """The keys to reconcile early now (maybe none), and when to look again."""
        policy = self.spec.stragglers
        if self.reconcile_fn is None or self.straggler_rounds >= policy.rounds:
            return [], math.inf
        if not self.event_times:
            return [], math.inf  # nothing has arrived: the batch has not started reporting
        candidates = [k for k in self.active() if k not in self.rechecked]
        if not candidates:
            return [], math.inf
        quiet = policy.quiet_interval(self.event_times, self.straggler_rounds)
        due_at = max(self.event_times[-1], self.last_round_at, self.armed_at) + quiet
        return (candidates if now >= due_at else []), due_at

    async def reconcile(self, keys: list[str], *, at_deadline: bool) -> None:
        # The store first: an event the live stream dropped in a burst costs no API call.
        await self.read_store(keys)
        keys = [k for k in keys if k in self.open]
        if not keys:
            if not at_deadline:
                self.last_round_at = self.loop.time()
            return
        if self.reconcile_fn is None:
            if at_deadline:
                self.given_up.update(keys)
            return
        if at_deadline:
            self.deadline_rounds += 1
            self.log.info(
                "%s: no event for %d of %d by the deadline; reconciling them in one batch",
                self.spec.name,
                len(keys),
                len(self.spec.keys),
            )
        else:
            self.straggler_rounds += 1
            self.log.info(
                "%s: events went quiet with %d of %d open; reconciling the stragglers "
                "(round %d of %d)",
                self.spec.name,
                len(keys),
                len(self.spec.keys),
                self.straggler_rounds,
                self.spec.stragglers.rounds,
            )
        asked = set(keys)
        try:
            answers = await reconcile_with_retry(
                self.reconcile_fn,
                lambda: sorted(k for k in asked if k in self.open),
                self.spec.retry,
                lambda seconds: self.backoff(seconds, asked),
                self.log,
                f"{self.spec.name}: reconciliation",
            )
        except Exception as exc:
            error = _describe(exc)
            if at_deadline:
                still = [k for k in keys if k in self.open]
                self.given_up.update(still)
                self.reconcile_error = error
                self.log.error(
                    "%s: reconciliation failed (%s); %s stay unknown, %d settled by "
                    "event keep their results",
                    self.spec.name,
                    error,
                    plural(len(still), "key"),
                    len(self.settled),
                )
            else:
                self.log.warning(
                    "%s: straggler reconciliation failed (%s); waiting on for events",
                    self.spec.name,
                    error,
                )
            self.last_round_at = self.loop.time()
            return
        self._apply(keys, answers, at_deadline)
        self.last_round_at = self.loop.time()

    def _apply(self, keys: list[str], answers: dict[str, Answer], at_deadline: bool) -> None:
        now = datetime.now(UTC)
        for key in keys:
            if key not in self.open:
                continue
            answer = answers.get(key)
            if answer is None:
                if at_deadline:
                    self.given_up.add(key)
                continue
            if answer.final:
                self._settle(
                    Settlement(key=key, by="reconciliation", settled_at=now, data=answer.data)
                )
                if self.watch is not None:
                    self.watch.lost(1)
                continue
            self.last_known[key] = answer.data
            moved = self._deadline_from(answer, now)
            if moved is not None:
                self.deadline[key] = moved
                self.rechecked.add(key)
            elif at_deadline:
                self.given_up.add(key)

    def _deadline_from(self, answer: Answer, now: datetime) -> float | None:
        if answer.recheck_at is None:
            return None
        at = self.loop.time() + (answer.recheck_at - now).total_seconds()
        at = min(at, self.limit_at)
        return at if at > self.loop.time() + 0.05 else None

    async def run(self) -> None:
        await self.read_store()
        next_read = self.loop.time() + self.spec.reread_every
        while not self.stopped and ((active := self.active()) or self.awaiting_arming()):
            now = self.loop.time()
            due = [k for k in active if self.deadline[k] <= now]
            if due:
                await self.reconcile(due, at_deadline=True)
                continue
            early, straggler_at = self.stragglers(now)
            if early:
                await self.reconcile(early, at_deadline=False)
                continue
            if self.gap or now >= next_read:
                self.gap = False
                await self.read_store(self.open - self.unarmed)
                next_read = self.loop.time() + self.spec.reread_every
                continue
            if now >= self.hold_until:
                return  # a durable wait: the keys still open are for a resumed run
            report_at = math.inf if self.watch is None else self.watch.next_at
            if now >= report_at:
                await self.report()
                continue
            wake_at = min(
                next_read,
                straggler_at,
                report_at,
                self.hold_until,
                *(self.deadline[k] for k in active),
            )
            await self.pause(wake_at - now)

    def next_deadline(self) -> datetime | None:
        active = self.active()
        if not active:
            return None
        seconds = min(self.deadline[k] for k in active) - self.loop.time()
        return datetime.now(UTC) + timedelta(seconds=max(0.0, seconds))

    async def report(self) -> None:
        assert self.watch is not None
        try:
            # Keys not due yet (unarmed) are not a stall: nothing is late for them.
            await self.watch.tick(len(self.settled), len(self.open - self.unarmed))
        except Exception as exc:
            self.log.warning("%s: could not report progress: %s", self.spec.name, exc)

    async def close(self) -> None:
        if self.watch is not None:
            try:
                await self.watch.close(len(self.settled), len(self.open))
            except Exception as exc:
                self.log.warning("%s: could not close its progress: %s", self.spec.name, exc)

    def result(self, stream: EventStream) -> WaitResult:
        return WaitResult(
            name=self.spec.name,
            started_at=self.started,
            finished_at=datetime.now(UTC),
            settled=self.settled,
            unsettled=sorted(self.open),
            pending=sorted(self.active()),
            next_deadline=self.next_deadline(),
            last_known={k: v for k, v in self.last_known.items() if k in self.open},
            reconcile_error=self.reconcile_error,
            live_events=self.live,
            stored_events=self.stored,
            store_reads=self.reads,
            duplicates=self.duplicates,
            foreign=dict(self.foreign),
            straggler_rounds=self.straggler_rounds,
            deadline_rounds=self.deadline_rounds,
            subscribed=stream.connected,
        )


async def wait_for_events(
    spec: EventWait,
    reconcile: Reconciler | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    stream: EventStream | None = None,
) -> WaitResult:
    """Wait until every key is settled or given up (see `alicloud_runbooks.reconciliation`).

    Pass the `stream` opened before the action; without one, the wait opens its own,
    filtered to its keys (events stored before it connected are found by the store reads).
    """
    log = log or logger
    if stream is None:
        own = EventStream(
            [spec.event],
            log,
            resource_ids=[spec.resource_of(k) for k in spec.keys],
            related_ids=spec.related,
            reopen_every=spec.reread_every,
            subscribe_timeout=spec.subscribe_timeout,
        )
        async with own:
            return await wait_for_events(spec, reconcile, log, own)
    waiting = _Waiting(spec, reconcile, log, stream)
    if spec.control is not None:
        spec.control.bind(waiting)
    stream.attach(waiting)
    try:
        await waiting.run()
    except BaseException:
        if waiting.watch is not None:
            waiting.watch.abandon()
        raise
    finally:
        stream.detach(waiting)
    await waiting.close()
    return waiting.result(stream)
