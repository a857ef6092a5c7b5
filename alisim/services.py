"""How a service is wired into alisim: one entry in `SERVICES`, nothing else.

An entry (`alisim.service.Service`) names the service's state on `Cloud` and the factory that
builds it (`Cloud` calls it at start-up and again at every reset, in list order, so a service
may use those listed before it), its OpenAPI routing table (`ActionTable`: product, version,
action -> handler and `RegionId` rule, which dispatch applies), its developer endpoints under
`/_alisim/`, its plain HTTP endpoints (`http`: ROS's signal URL), the CloudMonitor notices of
its events, and its hooks: `on_event` for every
published event, `summary` for `/_alisim/health`, `shutdown` (reverse list order, at reset
and exit) and `forget` (reset only). Events are published product-neutrally with
`cloud.publish_event(source=..., type=..., subject=..., data=...)`.

Each service's code lives in its own folder (`alisim/<service>/`), in the manner of moto.
OSS is the one REST product: its requests are routed by path in `alisim/oss/handlers.py`
(alisim's fallback for whatever is neither `/_alisim/` nor an OpenAPI call).
"""

from __future__ import annotations

from alisim.cloud_assistant import actions as cloud_assistant_actions
from alisim.cloud_assistant.service import CloudAssistant
from alisim.ecs import actions as ecs_actions
from alisim.ecs import events as ecs_events
from alisim.ecs.instances import InstanceService
from alisim.eventbridge import actions as eventbridge_actions
from alisim.eventbridge import devroutes as eventbridge_devroutes
from alisim.eventbridge.service import EventBridgeService
from alisim.oss.store import OssStore
from alisim.ros import actions as ros_actions
from alisim.ros import notify as ros_notify
from alisim.ros import signals as ros_signals
from alisim.ros.service import RosService
from alisim.service import Service
from alisim.sts import actions as sts_actions

SERVICES: tuple[Service, ...] = (
    Service("oss", lambda cloud: OssStore(cloud.settings.region)),
    Service(
        "eventbridge",
        EventBridgeService,
        actions=eventbridge_actions.ACTIONS,
        devapi=eventbridge_devroutes.ROUTES,
        on_event=EventBridgeService.on_event,
        shutdown=EventBridgeService.shutdown,
        forget=EventBridgeService.forget,
    ),
    Service("sts", actions=sts_actions.ACTIONS),
    Service(
        "instances",
        InstanceService,
        actions=ecs_actions.ACTIONS,
        notices=ecs_events.NOTICES,
        summary=InstanceService.summary,
        shutdown=InstanceService.shutdown,
    ),
    Service(
        "assistant",
        CloudAssistant,
        actions=cloud_assistant_actions.ACTIONS,
        summary=CloudAssistant.summary,
        shutdown=CloudAssistant.shutdown,
    ),
    Service(
        "ros",
        RosService,
        actions=ros_actions.ACTIONS,
        http=ros_signals.ROUTES,
        notices=ros_notify.NOTICES,
        on_event=RosService.on_event,
        summary=RosService.summary,
        shutdown=RosService.shutdown,
    ),
)
