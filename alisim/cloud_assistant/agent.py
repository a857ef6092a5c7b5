"""Which Cloud Assistant agent versions send which events (the documented version rules)."""

from __future__ import annotations

FIRST_HEARTBEAT_MIN = {"linux": "1.0.2.569", "windows": "1.0.0.149"}
OUTPUT_DELIVERY_MIN = {"linux": "2.2.4.1007", "windows": "2.1.4.1007"}


def _parts(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def later_than(version: str, floor: str) -> bool:
    return _parts(version) > _parts(floor)


def sends_first_heartbeat(os_type: str, version: str) -> bool:
    return later_than(version, FIRST_HEARTBEAT_MIN[os_type])


def supports_output_delivery(os_type: str, version: str) -> bool:
    return later_than(version, OUTPUT_DELIVERY_MIN[os_type])
