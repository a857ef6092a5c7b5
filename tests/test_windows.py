"""The window arithmetic (alicloud_runbooks/windows.py) against Prefect's bucket rules, and
the restart verdicts (alicloud_runbooks/restarts.py): pure functions, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alicloud_runbooks.restarts import decide
from alicloud_runbooks.windows import OUT_OF_ORDER, EventWindow, bounds

T = datetime(2026, 12, 2, 8, 0, 0, 123456, tzinfo=UTC)
W = timedelta(seconds=5)


def window(start: datetime) -> EventWindow:
    return EventWindow(event="acs.ecs.Instance.StateChange", start=start, seconds=5)


def test_a_first_window_is_a_fresh_bucket_at_its_trigger() -> None:
    found = bounds(window(T), None)
    assert (found.since, found.end) == (T - OUT_OF_ORDER, T + W)


def test_a_trigger_in_the_bucket_after_the_last_window_gets_that_bucket() -> None:
    # Prefect opens the next bucket where the last one ended, whenever its first event comes.
    found = bounds(window(T + W + timedelta(seconds=3)), T + W)
    assert (found.since, found.end) == (T + W, T + 2 * W)


def test_a_trigger_after_a_quiet_bucket_opens_a_fresh_one() -> None:
    start = T + 3 * W
    found = bounds(window(start), T + W)
    assert (found.since, found.end) == (start - OUT_OF_ORDER, start + W)


def test_event_labels_match_as_the_trigger_matches_them() -> None:
    from prefect.events.schemas.events import Event

    spec = EventWindow(
        event="acs.ecs.CloudAssistant.TaskCompleted",
        start=T,
        match={
            "acs.ecs.invocation-status": ["Failed", "Timeout"],
            "acs.ecs.command-name": "!collect-diagnostics",
        },
    )

    def event(status: str, command: str) -> Event:
        return Event(
            occurred=T,
            event="acs.ecs.CloudAssistant.TaskCompleted",
            resource={
                "prefect.resource.id": "acs.ecs.instance.i-1",
                "acs.ecs.invocation-status": status,
                "acs.ecs.command-name": command,
            },
        )

    assert spec.matches(event("Failed", "patch"))
    assert spec.matches(event("Timeout", ""))
    assert not spec.matches(event("Success", "patch"))
    assert not spec.matches(event("Failed", "collect-diagnostics"))


def test_restart_verdicts() -> None:
    def verdict(**changes: object) -> str:
        args: dict[str, object] = {
            "state": "Stopped",
            "managed": True,
            "asked": False,
            "restarts_last_hour": 0,
            "max_per_hour": 2,
            "action": "start",
            **changes,
        }
        return decide("i-1", **args).action  # type: ignore[arg-type]

    assert verdict() == "start"
    assert verdict(action="report") == "report"
    assert verdict(managed=False) == "none"
    assert verdict(asked=True) == "none"
    assert verdict(state="Running") == "none"
    assert verdict(state=None) == "none"
    assert verdict(restarts_last_hour=1) == "start"
    assert verdict(restarts_last_hour=2) == "report"
