"""The whole local stack: a Prefect server, alisim, the relay, and the EventBridge rules that
connect them (the same code as `runbooks subscribe`). On free ports and in temporary homes
unless told (`runbooks up` gives fixed ports and a kept home). Used by `runbooks demo`,
`runbooks up`, the end-to-end tests and the benchmarks."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from alibabacloud_ecs20140526 import models as ecs
from prefect.settings import PREFECT_API_URL, temporary_settings

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.relay.app import create_app
from alicloud_runbooks.relay.settings import RelaySettings
from alicloud_runbooks.subscribe import subscribe
from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, Settings
from alisim.server import AlisimServer
from local_stack.servers import FAST_EVENT_STORE, PrefectServer, ThreadedServer

if TYPE_CHECKING:
    from local_stack.scale_out import ScaleOutPrefect

DEAD_LETTER_QUEUE = "runbooks-relay-dlq"


def flush_prefect_clients(timeout: float = 5.0) -> None:
    """Send this process's queued run logs and events before their server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


@dataclass
class LocalStack:
    """Start with `start()` (or `with`), stop with `stop()`: every server by its own handle."""

    sim_settings: Settings = field(default_factory=Settings)
    prefect: PrefectServer | ScaleOutPrefect | None = None
    sim: AlisimServer | None = None
    relay: ThreadedServer | None = None
    # With several Prefect API servers (ScaleOutPrefect): one relay per API server, and
    # `relay` is the round-robin front EventBridge pushes to.
    relay_replicas: list[ThreadedServer] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    subscribed: list[str] = field(default_factory=list)
    prefect_port: int | None = None
    sim_port: int | None = None
    relay_port: int | None = None
    prefect_home: Path | None = None
    sim_data_dir: Path | None = None
    _own_prefect: bool = True

    def start(self, prefect: PrefectServer | ScaleOutPrefect | None = None) -> LocalStack:
        try:
            # Each handle is kept before it starts, so stop() reaches a half-started server.
            if prefect is None:
                self.prefect = PrefectServer(
                    port=self.prefect_port,
                    home=self.prefect_home,
                    extra_env=FAST_EVENT_STORE,
                )
                self.prefect.start()
            else:
                self.prefect, self._own_prefect = prefect, False
            self.sim = AlisimServer(
                self.sim_settings, port=self.sim_port, data_dir=self.sim_data_dir
            )
            self.sim.start()
            self._start_relay()
            self.subscribe()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def api_urls(self) -> list[str]:
        """Every Prefect API server of the stack (one, unless it is a ScaleOutPrefect)."""
        return list(getattr(self.prefect, "api_urls", [self.api_url]))

    def _start_relay(self) -> None:
        urls = self.api_urls
        if len(urls) == 1:
            self.relay = ThreadedServer(
                create_app(self.relay_settings()), port=self.relay_port, name="relay"
            )
            self.relay.start()
            return
        from local_stack.relay_front import create_front

        for url in urls:
            replica = ThreadedServer(create_app(self.relay_settings(url)), name="relay")
            self.relay_replicas.append(replica)
            replica.start()
        self.relay = ThreadedServer(
            create_front([r.url for r in self.relay_replicas]), port=self.relay_port, name="relay"
        )
        self.relay.start()

    def stop_relay_replica(self, index: int) -> None:
        """Stop one relay replica (the front sends its pushes to the others)."""
        self.relay_replicas[index].stop()

    def start_relay_replica(self, index: int) -> None:
        """A new relay replica on the port of replica `index`, to the same API server."""
        port = self.relay_replicas[index].port
        replica = ThreadedServer(
            create_app(self.relay_settings(self.api_urls[index])), port=port, name="relay"
        )
        self.relay_replicas[index] = replica
        replica.start()

    def relay_settings(self, api_url: str | None = None) -> RelaySettings:
        """The relay accepts events of alisim's account only, as it should of yours."""
        return RelaySettings(
            token=self.token,
            prefect_api_url=api_url or self.api_url,
            allowed_account_ids=[self.sim_settings.account_id],
        )

    def subscribe(self) -> list[str]:
        """Create or update the rules that push events to the relay (alisim resets drop them)."""
        self.subscribed = subscribe(
            self.credentials().eventbridge_client(),
            target_url=self.relay_url,
            token=self.token,
            dead_letter_arn=self.dead_letter_arn,
        )
        return self.subscribed

    @property
    def dead_letter_arn(self) -> str:
        """An MNS queue ARN in the documented form, with alisim's region and account."""
        settings = self.sim_settings
        return f"acs:mns:{settings.region}:{settings.account_id}:/queues/{DEAD_LETTER_QUEUE}"

    def stop(self) -> None:
        if self._own_prefect:
            flush_prefect_clients()
        if self.relay is not None:
            self.relay.stop()
        for replica in self.relay_replicas:
            replica.stop()
        if self.sim is not None:
            self.sim.stop()
        if self.prefect is not None and self._own_prefect:
            self.prefect.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        assert self.prefect is not None
        return self.prefect.api_url

    @property
    def relay_url(self) -> str:
        assert self.relay is not None
        return f"{self.relay.url}/eventbridge"

    @property
    def sim_url(self) -> str:
        assert self.sim is not None
        return self.sim.url

    def credentials(self) -> AlibabaCloudCredentials:
        assert self.sim is not None
        return AlibabaCloudCredentials(
            access_key_id=DEFAULT_ACCESS_KEY_ID,
            access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
            region_id=self.sim_settings.region,
            openapi_endpoint=self.sim.endpoint,
            oss_endpoint=self.sim.endpoint,
            protocol="http",
        )

    @contextmanager
    def prefect_client_settings(self) -> Iterator[None]:
        """Flows run in this process talk to this stack's Prefect server."""
        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def api_calls(self) -> dict[str, dict[str, int]]:
        """API calls alisim counted, per product and action."""
        response = httpx.get(f"{self.sim_url}/_alisim/calls")
        response.raise_for_status()
        return response.json()["calls"]

    def launch_ready(self, count: int, timeout: float = 60, **request: Any) -> list[str]:
        """Instances launched outside any runbook (RunInstances through the official SDK),
        returned once their Cloud Assistant agents are online."""
        client = self.credentials().ecs_client()
        region = self.sim_settings.region
        ids = client.run_instances(
            ecs.RunInstancesRequest(
                region_id=region,
                image_id="aliyun_3_x64",
                instance_type="ecs.g7.large",
                amount=count,
                **request,
            )
        ).body.instance_id_sets.instance_id_set
        deadline = time.monotonic() + timeout
        while True:
            found = client.describe_cloud_assistant_status(
                ecs.DescribeCloudAssistantStatusRequest(
                    region_id=region, instance_id=ids, max_results=50
                )
            ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
            if len(found) == count and all(s.cloud_assistant_status == "true" for s in found):
                return ids
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agents of {ids} were not online within {timeout}s")
            time.sleep(0.05)
