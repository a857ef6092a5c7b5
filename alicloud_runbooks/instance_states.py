"""Which `Instance:StateChange` states the relay's rule forwards, and how `--instance-states`
names them. Kept apart from `subscribe` (whose EventBridge SDK takes a third of a second to
import) so that building the `runbooks` command line does not pay for it."""

from __future__ import annotations

FORWARDED_INSTANCE_STATES: tuple[str, ...] = ("Stopped",)
"""The instance states the runbooks act on: Stopped starts `restart-stopped` (whose loop guard
also reads the earlier Stopped events). A launch publishes Pending, Starting and Running before
each FirstHeartbeat, so forwarding every state would make a launch burst four times the events
the launch's wait needs, all through the relay and Prefect ahead of the heartbeats;
`--instance-states all` (or a list) forwards more, for triggers of your own."""
INSTANCE_STATES = ("Pending", "Starting", "Running", "Stopping", "Stopped", "Deleted")


def parse_instance_states(value: str) -> tuple[str, ...] | None:
    """`Running,Stopped` → those states; `all` → None (every state); ValueError otherwise."""
    if value.strip().lower() == "all":
        return None
    states = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in states if s not in INSTANCE_STATES]
    if not states or unknown:
        raise ValueError(
            f"--instance-states {value!r}: give a comma-separated list of "
            f"{', '.join(INSTANCE_STATES)}, or 'all'"
        )
    return states
