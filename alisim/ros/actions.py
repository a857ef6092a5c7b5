"""ROS actions (API 2019-09-10, RPC style), with the parameters `alibabacloud_ros20190910`
sends (1-based flattened lists, `DisableRollback=True`, TemplateBody in the form body or, for
ContinueCreateStack, the query) and ROS's error codes. `ACTIONS` is the routing table;
dispatch checks `RegionId` before any handler runs.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import uuid
from typing import TYPE_CHECKING, Any

from alisim.errors import ApiError, invalid_parameter, missing_parameter
from alisim.openapi.paging import paginate
from alisim.openapi.params import Params
from alisim.openapi.registry import ROS, Action, ActionTable, Region
from alisim.ros import engine as stack_engine
from alisim.ros import views
from alisim.ros.models import UPDATABLE, ResourceStatus, Stack, StackStatus
from alisim.ros.notify import EVENTBRIDGE_URL
from alisim.ros.resources import TYPES
from alisim.ros.resources.base import ResourceFailed
from alisim.ros.resources.wait import BadSignal, Handle, WaitConditionHandleType, handle_of
from alisim.ros.template import parse
from alisim.ros.template.errors import TemplateError
from alisim.ros.template.functions import NO_VALUE, Evaluator, as_text
from alisim.ros.template.parameters import check_defaults, resolve
from alisim.ros.template.parse import NO_DEFAULT, Template

if TYPE_CHECKING:
    from alisim.cloud import Cloud

STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
CLIENT_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_PAGE_SIZE = 50


# ----- errors and common parameters


def stack_not_found(name: str) -> ApiError:
    return ApiError("StackNotFound", f"The Stack ({name}) could not be found.", 404)


def resource_not_found(name: str, stack: Stack) -> ApiError:
    return ApiError(
        "ResourceNotFound", f"The Resource ({name}) could not be found in Stack {stack.name}.", 404
    )


def in_progress(stack: Stack) -> ApiError:
    return ApiError(
        "ActionInProgress",
        f"Stack {stack.name} already has an action ({stack.status.action}) in progress.",
        409,
    )


def not_supported(message: str) -> ApiError:
    return ApiError("NotSupported", message, 400)


def template_failed(error: TemplateError) -> ApiError:
    return ApiError(error.code, error.message, 400)


def _idempotent(cloud: Cloud, action: str, params: Params) -> dict[str, Any] | None:
    token = params.get("ClientToken")
    if token is None:
        return None
    if not CLIENT_TOKEN.match(token):
        raise invalid_parameter(
            "ClientToken", "It must be 1-64 letters, digits, hyphens (-) or underscores (_)."
        )
    mismatch = ApiError(
        "InvalidIdempotenceParameter", "The specified parameters are different from before.", 400
    )
    return cloud.idempotency.lookup(f"ROS.{action}", params, mismatch)


def _remember(cloud: Cloud, action: str, params: Params, result: dict[str, Any]) -> None:
    cloud.idempotency.store(f"ROS.{action}", params, result)


def _stack(cloud: Cloud, params: Params) -> Stack:
    stack_id = params.require("StackId")
    stack = cloud.ros.stacks.get(stack_id)
    if stack is None:
        raise stack_not_found(stack_id)
    return stack


def _template_body(params: Params, *, required: bool = True) -> str | None:
    body = params.get("TemplateBody")
    for other in ("TemplateURL", "TemplateId", "TemplateScratchId"):
        if params.get(other) is not None:
            if body is not None:
                raise ApiError(
                    "MultipleParameter",
                    f"Only one of the input parameters TemplateBody, {other} can be specified.",
                )
            raise invalid_parameter(
                other, "alisim takes templates as TemplateBody only (paste the template's text)."
            )
    if body is None and required:
        raise ApiError(
            "MissingParameter",
            "One of the input parameters TemplateBody, TemplateURL, TemplateId should be "
            "specified.",
        )
    return body


def _template(body: str) -> Template:
    try:
        template = parse.parse(body, TYPES)
        check_defaults(template)
    except TemplateError as exc:
        raise template_failed(exc) from None
    return template


def _given(params: Params) -> dict[str, str]:
    entries = params.objects("Parameters")
    if len(entries) > 200:
        raise invalid_parameter("Parameters", "At most 200 parameters may be given.")
    given: dict[str, str] = {}
    for n, entry in enumerate(entries, 1):
        key = entry.get("ParameterKey")
        if not key:
            raise missing_parameter(f"Parameters.{n}.ParameterKey")
        if "ParameterValue" not in entry:
            raise missing_parameter(f"Parameters.{n}.ParameterValue")
        given[key] = entry["ParameterValue"]
    return given


def _values(template: Template, given: dict[str, str]) -> dict[str, Any]:
    try:
        return resolve(template, given)
    except TemplateError as exc:
        raise template_failed(exc) from None


def _tags(params: Params, name: str = "Tags") -> dict[str, str]:
    entries = params.objects(name)
    if len(entries) > 20:
        raise invalid_parameter(name, "At most 20 tags may be given.")
    found = {}
    for n, entry in enumerate(entries, 1):
        key = entry.get("Key")
        if not key:
            raise missing_parameter(f"{name}.{n}.Key")
        found[key] = entry.get("Value", "")
    return found


def _notification_urls(params: Params) -> list[str]:
    urls = params.list("NotificationURLs")
    if len(urls) > 5:
        raise invalid_parameter("NotificationURLs", "At most 5 may be given.")
    for url in urls:
        if url == EVENTBRIDGE_URL:
            continue
        if len(url.encode()) > 1024 or not url.lower().startswith(("http://", "https://")):
            raise invalid_parameter(
                "NotificationURLs",
                f"{url[:80]!r} must be an http(s) URL of at most 1,024 bytes or 'eventbridge'.",
            )
    return urls


def _expand(cloud: Cloud, stack: Stack, template: Template, values: dict[str, Any]) -> Any:
    try:
        return stack_engine.expand(cloud, stack, template, values)
    except TemplateError as exc:
        raise template_failed(exc) from None


def _signal_base(params: Params) -> str:
    return f"http://{params.host or '127.0.0.1'}"


# ----- create, read, list


async def create_stack(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = _idempotent(cloud, "CreateStack", params)
    if cached is not None:
        return cached
    name = params.require("StackName")
    if not STACK_NAME.match(name):
        raise invalid_parameter(
            "StackName",
            "It must start with a letter or digit and hold at most 255 letters, digits, "
            "hyphens (-) or underscores (_).",
        )
    template = _template(_template_body(params) or "")
    given = _given(params)
    values = _values(template, given)
    timeout = params.int("TimeoutInMinutes", 60, minimum=10, maximum=1440) or 60
    protection = params.get("DeletionProtection", "Disabled") or "Disabled"
    if protection not in ("Enabled", "Disabled"):
        raise invalid_parameter("DeletionProtection", "Use Enabled or Disabled.")
    stack = Stack(
        stack_id=str(uuid.uuid4()),
        name=name,
        region=cloud.settings.region,
        template=template,
        template_body=params.require("TemplateBody"),
        given=given,
        values=values,
        disable_rollback=params.bool("DisableRollback"),
        timeout_minutes=timeout,
        notification_urls=_notification_urls(params),
        tags=_tags(params),
        deletion_protection=protection,
        parallelism=params.int("Parallelism", 0, minimum=0) or 0,
        caller=cloud.settings.account_id,
        request_id=params.request_id,
        signal_base=_signal_base(params),
    )
    if cloud.ros.by_name(name) is not None:
        raise ApiError("StackExists", f"The Stack ({name}) already exists.", 409)
    resources, deps = _expand(cloud, stack, template, values)
    stack.resources = resources
    cloud.ros.stacks[stack.stack_id] = stack
    engine = cloud.ros.engine
    engine.stack_status(stack, StackStatus.CREATE_IN_PROGRESS, "Stack CREATE started")
    cloud.ros.start(stack, engine.create(stack, deps))
    result = {"StackId": stack.stack_id}
    _remember(cloud, "CreateStack", params, result)
    return result


async def get_stack(cloud: Cloud, params: Params) -> dict[str, Any]:
    stack = _stack(cloud, params)
    progress = params.get("ShowResourceProgress", "Disabled") or "Disabled"
    if progress not in ("Disabled", "PercentageOnly", "EnabledIfCreateStack"):
        raise invalid_parameter(
            "ShowResourceProgress", "Use Disabled, PercentageOnly or EnabledIfCreateStack."
        )
    output = params.get("OutputOption", "Enabled") or "Enabled"
    return views.stack_view(cloud, stack, with_outputs=output != "Disabled", progress=progress)


def _matches_tags(stack: Stack, wanted: list[dict[str, str]]) -> bool:
    for tag in wanted:
        key = tag.get("Key")
        if key not in stack.tags:
            return False
        if "Value" in tag and stack.tags[key] != tag["Value"]:
            return False
    return True


async def list_stacks(cloud: Cloud, params: Params) -> dict[str, Any]:
    stacks = sorted(cloud.ros.stacks.values(), key=lambda s: s.created_at, reverse=True)
    if names := params.list("StackName"):
        stacks = [s for s in stacks if any(fnmatch.fnmatchcase(s.name, n) for n in names)]
    if statuses := params.list("Status"):
        stacks = [s for s in stacks if s.status in statuses]
    if stack_id := params.get("StackId"):
        stacks = [s for s in stacks if s.stack_id == stack_id]
    if stack_ids := params.list("StackIds"):
        stacks = [s for s in stacks if s.stack_id in stack_ids]
    if tags := params.objects("Tag"):
        stacks = [s for s in stacks if _matches_tags(s, tags)]
    page, paging = paginate(stacks, params, max_size=MAX_PAGE_SIZE)
    return {"Stacks": [views.stack_summary(s) for s in page], **paging}


async def list_stack_events(cloud: Cloud, params: Params) -> dict[str, Any]:
    stack = _stack(cloud, params)
    found = list(reversed(stack.events))
    if statuses := params.list("Status"):
        found = [e for e in found if e.status in statuses]
    if kinds := params.list("ResourceType"):
        found = [e for e in found if e.resource_type in kinds]
    if logical_ids := params.list("LogicalResourceId"):
        found = [e for e in found if e.logical_id in logical_ids]
    page, paging = paginate(found, params, max_size=MAX_PAGE_SIZE)
    return {"Events": [views.event_view(e) for e in page], **paging}


async def list_stack_resources(cloud: Cloud, params: Params) -> dict[str, Any]:
    stack = _stack(cloud, params)
    return {"Resources": [views.resource_view(stack, r) for r in stack.resources.values()]}


async def get_stack_resource(cloud: Cloud, params: Params) -> dict[str, Any]:
    stack = _stack(cloud, params)
    name = params.require("LogicalResourceId")
    resource = stack.resources.get(name)
    if resource is None:
        raise resource_not_found(name, stack)
    view = {
        **views.resource_view(stack, resource),
        "Description": resource.spec.description,
        "Metadata": resource.spec.metadata,
    }
    if params.bool("ShowResourceAttributes"):
        wanted = params.list("ResourceAttributes")
        if len(wanted) > 20:
            raise invalid_parameter("ResourceAttributes", "At most 20 may be given.")
        kind = TYPES[resource.type]
        names = wanted or sorted(kind.attributes)
        view["ResourceAttributes"] = [
            {"Key": n, "Value": kind.attribute(resource, n)}
            for n in names
            if n in kind.attributes and resource.exists
        ]
    return view


async def get_template(cloud: Cloud, params: Params) -> dict[str, Any]:
    if params.get("StackId") is None:
        if params.get("TemplateId") or params.get("ChangeSetId") or params.get("StackGroupName"):
            raise invalid_parameter(
                "TemplateId", "alisim keeps no template library; ask by StackId."
            )
        raise missing_parameter("StackId")
    stack = _stack(cloud, params)
    result: dict[str, Any] = {
        "StackId": stack.stack_id,
        "TemplateBody": stack.template_body,
        "Description": stack.template.description,
        "RegionId": stack.region,
        "CreateTime": views.api_time(stack.created_at),
    }
    if stack.updated_at is not None:
        result["UpdateTime"] = views.api_time(stack.updated_at)
    return result


# ----- templates


def _parameter_view(spec: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"ParameterKey": spec.name, **spec.raw}
    view["NoEcho"] = "true" if spec.no_echo else "false"
    view["Label"] = spec.label
    if spec.default is not NO_DEFAULT:
        view["Default"] = spec.default
    return view


async def validate_template(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = _idempotent(cloud, "ValidateTemplate", params)
    if cached is not None:
        return cached
    template = _template(_template_body(params) or "")
    used = sorted({spec.type for spec in template.resources.values()})
    result = {
        "Description": template.description,
        "Parameters": [_parameter_view(p) for p in template.parameters.values()],
        "Outputs": [
            {
                "OutputKey": key,
                "Description": str(output.get("Description") or ""),
                "Label": str(output.get("Label") or key),
            }
            for key, output in template.outputs.items()
        ],
        "Resources": [
            {
                "LogicalResourceIdPattern": f"{name}[*]" if spec.count is not None else name,
                "ResourcePath": name,
                "ResourceType": spec.type,
            }
            for name, spec in template.resources.items()
        ],
        "ResourceTypes": {"Resources": used, "DataSources": []},
    }
    _remember(cloud, "ValidateTemplate", params, result)
    return result


class _Unresolved(Exception):
    """A property refers to a resource a preview has not made."""


class _PreviewView:
    def __init__(self, stack: Stack | None) -> None:
        self.view = (
            stack_engine.View(stack.template, stack.resources) if stack is not None else None
        )

    def ref(self, name: str) -> Any:
        if self.view is None:
            raise _Unresolved(name)
        try:
            return self.view.ref(name)
        except (TemplateError, KeyError):
            raise _Unresolved(name) from None

    def attribute(self, name: str, attribute: str) -> Any:
        if self.view is None:
            raise _Unresolved(name)
        try:
            return self.view.attribute(name, attribute)
        except (TemplateError, KeyError):
            raise _Unresolved(name) from None


def _preview_properties(ev: Evaluator, resource: Any) -> dict[str, Any]:
    """Each property resolved, or as the template writes it while it needs a resource a
    preview has not made."""
    out: dict[str, Any] = {}
    for key, value in resource.spec.properties.items():
        try:
            resolved = ev.with_index(resource.index).evaluate(value, f"Properties.{key}")
        except _Unresolved:
            resolved = value
        if resolved is not NO_VALUE:
            out[key] = resolved
    return out


async def preview_stack(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = _idempotent(cloud, "PreviewStack", params)
    if cached is not None:
        return cached
    name, stack_id = params.get("StackName"), params.get("StackId")
    if (name is None) == (stack_id is None):
        raise ApiError(
            "MultipleParameter" if name else "MissingParameter",
            "Exactly one of the input parameters StackName, StackId should be specified.",
        )
    current = _stack(cloud, params) if stack_id else None
    body = _template_body(params, required=current is None) or (
        current.template_body if current else ""
    )
    template = _template(body)
    given = _given(params)
    if current is not None and params.bool("UsePreviousParameters"):
        given = {**_previous(current, template), **given}
    values = _values(template, given)
    probe = Stack(
        stack_id=current.stack_id if current else str(uuid.uuid4()),
        name=current.name if current else str(name),
        region=cloud.settings.region,
        template=template,
        template_body=body,
        given=given,
        values=values,
        disable_rollback=params.bool("DisableRollback"),
        timeout_minutes=params.int("TimeoutInMinutes", 60, minimum=10, maximum=1440) or 60,
        notification_urls=[],
        tags={},
    )
    resources, deps = _expand(cloud, probe, template, values)
    view = _PreviewView(current)
    ev = Evaluator(
        template,
        {**values, **stack_engine.pseudo_parameters(cloud, probe.stack_id, probe.name)},
        region=cloud.settings.region,
        resources=view,
    )
    required_by: dict[str, list[str]] = {n: [] for n in resources}
    for logical_id, needs in deps.items():
        for need in needs:
            required_by[need].append(logical_id)
    previews = []
    for logical_id, resource in resources.items():
        try:
            props = _preview_properties(ev, resource)
        except TemplateError as exc:
            raise template_failed(exc) from None
        entry: dict[str, Any] = {
            "LogicalResourceId": logical_id,
            "ResourceType": resource.type,
            "AcsResourceType": resource.type,
            "Properties": props,
            "Description": resource.spec.description,
            "RequiredBy": sorted(required_by[logical_id]),
        }
        old = current.resources.get(logical_id) if current else None
        if current is not None:
            if old is None or old.type != resource.type or not old.exists:
                entry["Action"] = "Add"
            elif props == old.properties:
                entry["Action"] = "None"
            else:
                entry["Action"] = "Modify"
                entry["Replacement"] = (
                    "True" if TYPES[old.type].replaces(old.properties, props) else "False"
                )
            if old is not None and old.exists:
                entry["PhysicalResourceId"] = old.physical_id
        else:
            entry["Action"] = "Add"
        previews.append(entry)
    if current is not None:
        for logical_id, old in current.resources.items():
            if logical_id not in resources and old.exists:
                previews.append(
                    {
                        "LogicalResourceId": logical_id,
                        "ResourceType": old.type,
                        "AcsResourceType": old.type,
                        "Action": "Remove",
                        "PhysicalResourceId": old.physical_id,
                        "Properties": old.properties,
                    }
                )
    result = {
        "Stack": {
            "StackName": probe.name,
            "Description": template.description,
            "TemplateDescription": template.description,
            "RegionId": probe.region,
            "DisableRollback": probe.disable_rollback,
            "TimeoutInMinutes": probe.timeout_minutes,
            "Parameters": views.parameters(cloud, probe),
            "Resources": previews,
        }
    }
    _remember(cloud, "PreviewStack", params, result)
    return result


# ----- change


def _previous(stack: Stack, template: Template) -> dict[str, str]:
    return {k: v for k, v in stack.given.items() if k in template.parameters}


def _parameters_of(template: Template, names: set[str]) -> set[str]:
    """The parameters the named resources' properties refer to."""
    found: set[str] = set()
    for name in names:
        spec = template.resources.get(name)
        if spec is None:
            continue
        for fn, args, _ in parse.walk_functions(spec.properties, name):
            if fn == "Ref" and isinstance(args, str) and args in template.parameters:
                found.add(args)
            if fn == "Fn::Sub":
                text = args[0] if isinstance(args, list) and args else args
                if isinstance(text, str):
                    found |= {v for v in parse.sub_variables(text) if v in template.parameters}
    return found


def _update_dry_run(stack: Stack, template: Template) -> dict[str, Any]:
    replacing = {
        name
        for name, spec in template.resources.items()
        if name in stack.template.resources and TYPES[spec.type].replace_on
    }
    replacement = sorted(_parameters_of(template, replacing))
    return {
        "ParametersAllowedToBeModified": sorted(template.parameters),
        "ParametersNotAllowedToBeModified": [],
        "ParametersConditionallyAllowedToBeModified": [],
        "ParametersUncertainlyAllowedToBeModified": [],
        "ParametersCauseReplacementIfModified": [],
        "ParametersConditionallyCauseReplacementIfModified": replacement,
        "ParametersUncertainlyCauseReplacementIfModified": [],
        "ParametersCauseInterruptionIfModified": [],
        "ParametersConditionallyCauseInterruptionIfModified": replacement,
        "ParametersUncertainlyCauseInterruptionIfModified": [],
    }


async def update_stack(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = _idempotent(cloud, "UpdateStack", params)
    if cached is not None:
        return cached
    stack = _stack(cloud, params)
    if stack.status.in_progress:
        raise in_progress(stack)
    if stack.status not in UPDATABLE:
        raise not_supported(f"Updating a stack when it is ({stack.status}) is not supported.")
    body = _template_body(params, required=False) or stack.template_body
    template = _template(body)
    given = _given(params)
    if params.bool("UsePreviousParameters"):
        given = {**_previous(stack, template), **given}
    values = _values(template, given)
    timeout = params.int("TimeoutInMinutes", 60, minimum=10, maximum=1440) or 60
    tags = _tags(params) if params.objects("Tags") else stack.tags
    if params.bool("DryRun"):
        return {"StackId": stack.stack_id, "DryRunResult": _update_dry_run(stack, template)}
    unchanged = (
        template.body == stack.template.body and values == stack.values and tags == stack.tags
    )
    if unchanged:
        raise not_supported(f"Update the completely same stack ({stack.name}) is not supported.")
    resources, deps = _expand(cloud, stack, template, values)
    stack.tags = tags
    stack.parallelism = params.int("Parallelism", stack.parallelism, minimum=0) or 0
    stack.request_id = params.request_id
    stack.cancel = asyncio.Event()
    engine = cloud.ros.engine
    engine.stack_status(stack, StackStatus.UPDATE_IN_PROGRESS, "Stack UPDATE started")
    cloud.ros.start(
        stack, engine.update(stack, template, body, given, values, deps, resources, timeout)
    )
    result = {"StackId": stack.stack_id}
    _remember(cloud, "UpdateStack", params, result)
    return result


async def delete_stack(cloud: Cloud, params: Params) -> dict[str, Any]:
    stack = _stack(cloud, params)
    if stack.status.in_progress:
        raise in_progress(stack)
    if stack.deletion_protection == "Enabled":
        raise not_supported(
            f"The stack ({stack.name}) has DeletionProtection Enabled; disable it to delete."
        )
    retain = set(params.list("RetainResources"))
    unknown = sorted(
        n
        for n in retain
        if n not in stack.resources and n not in {r.template_name for r in stack.resources.values()}
    )
    if unknown:
        raise resource_not_found(unknown[0], stack)
    stack.request_id = params.request_id
    engine = cloud.ros.engine
    engine.stack_status(stack, StackStatus.DELETE_IN_PROGRESS, "Stack DELETE started")
    cloud.ros.start(
        stack,
        engine.delete(
            stack,
            stack_engine.expanded_deps(cloud, stack),
            retain,
            params.bool("RetainAllResources"),
        ),
    )
    return {}


async def continue_create_stack(cloud: Cloud, params: Params) -> dict[str, Any]:
    stack = _stack(cloud, params)
    if stack.status.in_progress:
        raise in_progress(stack)
    if stack.status != StackStatus.CREATE_FAILED:
        raise not_supported(
            f"Continuing to create a stack when it is ({stack.status}) is not supported; "
            "only a CREATE_FAILED stack (created with DisableRollback) continues."
        )
    mode = params.get("Mode", "Recreate") or "Recreate"
    if mode not in ("Recreate", "Ignore"):
        raise invalid_parameter("Mode", "Use Recreate or Ignore.")
    body = _template_body(params, required=False)
    template = _template(body) if body else stack.template
    if body is not None:
        for section in ("Parameters", "Mappings", "Conditions"):
            if template.body.get(section) != stack.template.body.get(section):
                raise invalid_parameter(
                    "TemplateBody",
                    f"ContinueCreateStack may change Description, Metadata, Resources and "
                    f"Outputs only, not {section}.",
                )
    given = {**stack.given, **_given(params)}
    values = _values(template, given)
    recreate = set(params.list("RecreatingResources"))
    unknown = sorted(n for n in recreate if n not in stack.resources)
    if unknown:
        raise resource_not_found(unknown[0], stack)
    failed = {n for n, r in stack.resources.items() if r.status != ResourceStatus.CREATE_COMPLETE}
    if params.bool("DryRun"):
        created = set(stack.resources) - failed - recreate
        fixed = _parameters_of(template, {stack.resources[n].template_name for n in created})
        return {
            "StackId": stack.stack_id,
            "DryRunResult": {
                "ParametersAllowedToBeModified": sorted(set(template.parameters) - fixed),
                "ParametersNotAllowedToBeModified": sorted(fixed),
                "ParametersConditionallyAllowedToBeModified": [],
            },
        }
    stack.request_id = params.request_id
    engine = cloud.ros.engine
    if mode == "Ignore":
        engine.ignore_failed(stack)
        return {"StackId": stack.stack_id}
    resources, deps = _expand(cloud, stack, template, values)
    for name, resource in stack.resources.items():
        if name in resources:
            resources[name] = resource
            resource.spec = template.resources[resource.template_name]
        elif resource.exists:
            raise invalid_parameter(
                "TemplateBody",
                f"The created resource {name} cannot be removed by ContinueCreateStack.",
            )
    stack.template, stack.template_body, stack.given, stack.values = (
        template,
        body or stack.template_body,
        given,
        values,
    )
    stack.resources = resources
    stack.parallelism = params.int("Parallelism", stack.parallelism, minimum=0) or 0
    engine.stack_status(stack, StackStatus.CREATE_IN_PROGRESS, "Stack CREATE started")
    cloud.ros.start(stack, engine.continue_create(stack, deps, recreate))
    return {"StackId": stack.stack_id}


async def cancel_update_stack(cloud: Cloud, params: Params) -> dict[str, Any]:
    stack = _stack(cloud, params)
    kind = params.get("CancelType", "Safe") or "Safe"
    if kind not in ("Quick", "Safe"):
        raise invalid_parameter("CancelType", "Use Quick or Safe.")
    if stack.status != StackStatus.UPDATE_IN_PROGRESS or stack.cancel is None:
        raise not_supported(f"Cancelling update when stack is ({stack.status}) is not supported.")
    stack.cancel_type = kind
    stack.cancel.set()
    return {}


async def signal_resource(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = _idempotent(cloud, "SignalResource", params)
    if cached is not None:
        return cached
    stack = _stack(cloud, params)
    name = params.require("LogicalResourceId")
    status = params.require("Status")
    unique_id = params.require("UniqueId")
    if len(unique_id) > 64:
        raise invalid_parameter("UniqueId", "It must be 1-64 characters.")
    resource = stack.resources.get(name)
    if resource is None:
        raise resource_not_found(name, stack)
    handle = resource.state
    if resource.type != WaitConditionHandleType.name:
        prop = resource.properties.get("Handle") if resource.properties else None
        try:
            handle = handle_of(stack, as_text(prop)) if prop else None
        except ResourceFailed:
            handle = None
    if not isinstance(handle, Handle):
        raise invalid_parameter(
            "LogicalResourceId",
            f"{name} is not a created ALIYUN::ROS::WaitConditionHandle or WaitCondition.",
        )
    try:
        handle.signal(status, unique_id)
    except BadSignal as exc:
        raise invalid_parameter("Status", f"{exc}.") from None
    _remember(cloud, "SignalResource", params, {})
    return {}


ACTIONS = ActionTable(
    ROS,
    {
        "CreateStack": create_stack,
        "GetStack": get_stack,
        "ListStacks": list_stacks,
        "DeleteStack": delete_stack,
        "UpdateStack": update_stack,
        "ListStackEvents": list_stack_events,
        "ListStackResources": list_stack_resources,
        "GetStackResource": get_stack_resource,
        "GetTemplate": get_template,
        "ValidateTemplate": Action(validate_template, Region.OPTIONAL),
        "PreviewStack": preview_stack,
        "ContinueCreateStack": continue_create_stack,
        "CancelUpdateStack": cancel_update_stack,
        "SignalResource": signal_resource,
    },
)
