"""alisim settings: what a test, a benchmark or a developer may change at run time."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

DEFAULT_ACCESS_KEY_ID = "LTAI5tAlisimLocalKey0001"
DEFAULT_ACCESS_KEY_SECRET = "alisim-local-secret-not-for-production"
DEFAULT_ACCOUNT_ID = "1234567890123456"
DEFAULT_REGION = "cn-hangzhou"


class BootTime(BaseModel):
    """Seconds from Starting to the agent's first heartbeat, drawn uniformly per instance."""

    min_seconds: float = Field(ge=0)
    max_seconds: float = Field(ge=0)


class AgentVersions(BaseModel):
    """Cloud Assistant agent versions given to new instances, per OS."""

    linux: str = "2.2.4.1100"
    windows: str = "2.1.4.1100"


class RosEventSettings(BaseModel):
    """What ROS publishes on a stack's terminal statuses (`alisim/ros/notify.py` builds the
    payloads; Alibaba documents the type names but not the EventBridge `data`)."""

    source: str = Field(default="acs.ros", description="CloudEvents `source` of ROS events.")
    state_change_events: Literal["notification", "always", "never"] = Field(
        default="notification",
        description="When `ros:StackStateChange:*` events are published: for stacks whose "
        "NotificationURLs hold `eventbridge` (the documented opt-in), for every stack, or never. "
        "`ros:Stack:StatusChange` (the CloudMonitor event) is published for every stack.",
    )


class Settings(BaseModel):
    """Tunable behaviour; `/_alisim/settings` reads and patches this model."""

    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    time_scale: float = Field(
        default=1.0,
        ge=0,
        description="Multiplies every simulated delay (boot, stop, send window, retries).",
    )
    boot_time_linux: BootTime = BootTime(min_seconds=20, max_seconds=40)
    boot_time_windows: BootTime = BootTime(min_seconds=120, max_seconds=300)
    pending_seconds: float = Field(default=1.0, ge=0, description="Pending -> Starting delay.")
    stop_seconds: float = Field(default=5.0, ge=0, description="Stopping -> Stopped delay.")
    agent_versions: AgentVersions = AgentVersions()
    send_window_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a command waits for an instance's agent before it is Aborted.",
    )
    max_concurrent_commands_per_instance: int = Field(
        default=10,
        ge=1,
        description="Commands one instance's agent runs at once; more wait Pending. The real "
        "agent runs each instance's commands itself, so there is no account-wide cap.",
    )
    max_concurrent_commands: int | None = Field(
        default=None,
        ge=1,
        description="An optional cap across all instances (this host's processes), for tests "
        "of queued commands; None (the default) leaves only the per-instance bound, so a "
        "bench of 1,000 instances measures the runbook, not the emulator.",
    )
    call_log_limit: int = Field(
        default=200_000,
        ge=100,
        description="API calls and published events kept with their times for "
        "`/_alisim/call-log`; the oldest go first.",
    )
    signature_window_seconds: int = Field(default=900, ge=1)
    event_log_limit: int = Field(default=200_000, ge=100)
    event_time_precision: Literal["seconds", "milliseconds"] = Field(
        default="seconds",
        description="Precision of CloudEvents `time` and `aliyunpublishtime`: whole seconds as "
        "in Alibaba's samples, or milliseconds to keep the order of events within a second.",
    )
    ros_events: RosEventSettings = RosEventSettings()
    output_delivery_event_type: str = Field(
        default="ecs:CloudAssistant:OutputDelivered",
        description="EventBridge type of the output delivery event (not named in the docs).",
    )
    delivery_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Per-attempt timeout of an EventBridge/CloudMonitor push (real seconds).",
    )
    delivery_concurrency: int = Field(
        default=256,
        ge=1,
        description="Pushes in flight at once across all targets. EventBridge documents no "
        "cap for HTTP targets; 32 made a 1,000-instance burst wait in alisim, not the relay.",
    )
    delivery_log_limit: int = Field(default=100_000, ge=100)
    oss_max_object_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        le=5 * 1024**3,
        description="Largest OSS request body alisim accepts (objects live in memory); "
        "real OSS allows 5 GiB in one PutObject.",
    )
    openapi_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1, description="Largest OpenAPI (ECS, ROS...) request body."
    )
    devapi_max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Largest `/_alisim/*` request body."
    )
    dead_letter_path: str | None = Field(
        default=None,
        description="JSONL file of undeliverable events; default <data_dir>/dead-letters.jsonl.",
    )

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale


def zero_delay_settings(**overrides: object) -> Settings:
    """Settings for tests and benchmarks: instances boot at once. Event times keep their
    milliseconds: at zero boot a whole-second time would come before the call that caused
    the event, and latency figures measured from it would be off by up to a second."""
    base = Settings(
        boot_time_linux=BootTime(min_seconds=0, max_seconds=0),
        boot_time_windows=BootTime(min_seconds=0, max_seconds=0),
        pending_seconds=0,
        stop_seconds=0,
        event_time_precision="milliseconds",
    )
    return base.model_copy(update=overrides)
