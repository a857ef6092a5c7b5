"""ROS's answers, field for field as `alibabacloud_ros20190910`'s response models read them.
Times are `YYYY-MM-DDThh:mm:ss` in UTC without `Z`; `Outputs` is a list; `Parameters` holds
the pseudo-parameters too (`ALIYUN::Region`…)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from alisim.ros.engine import evaluator, pseudo_parameters
from alisim.ros.models import ResourceStatus, Stack, StackEvent, StackResource
from alisim.ros.template.errors import TemplateError
from alisim.ros.template.parameters import shown

if TYPE_CHECKING:
    from alisim.cloud import Cloud

NO_DESCRIPTION = "No description given"
OUTPUT_STATUSES = ("_COMPLETE", "_FAILED")


def api_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def tags(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


def parameters(cloud: Cloud, stack: Stack) -> list[dict[str, str]]:
    pseudo = {
        **pseudo_parameters(cloud, stack.stack_id, stack.name),
        "ALIYUN::NoValue": "None",
    }
    values = {**shown(stack.template, stack.values), **pseudo}
    return [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in sorted(values.items())]


def outputs_of(cloud: Cloud, stack: Stack) -> list[dict[str, Any]]:
    """The outputs that resolve now; one whose resources are missing is left out."""
    ev = evaluator(cloud, stack)
    found = []
    for key, output in stack.template.outputs.items():
        try:
            condition = output.get("Condition")
            if condition is not None and not ev.condition(condition, f"Outputs.{key}"):
                continue
            value = ev.evaluate(output["Value"], f"Outputs.{key}.Value")
        except TemplateError:
            continue
        found.append(
            {
                "OutputKey": key,
                "OutputValue": value,
                "Description": str(output.get("Description") or NO_DESCRIPTION),
            }
        )
    return found


def _progress(stack: Stack, option: str) -> dict[str, Any] | None:
    resources = list(stack.resources.values())
    total = len(resources)
    if option == "PercentageOnly":
        finished = sum(
            1
            for r in resources
            if r.status in (ResourceStatus.CREATE_COMPLETE, ResourceStatus.UPDATE_COMPLETE)
        )
        percent = 100.0 if total == 0 or not stack.status.in_progress else 100.0 * finished / total
        percent = round(percent, 2) if stack.status.in_progress else 100.0
        return {"StackOperationProgress": percent, "StackActionProgress": percent}
    if option == "EnabledIfCreateStack" and stack.status.action == "CREATE":
        running = [r for r in resources if r.status == ResourceStatus.CREATE_IN_PROGRESS]
        return {
            "TotalResourceCount": total,
            "SuccessResourceCount": sum(
                1 for r in resources if r.status == ResourceStatus.CREATE_COMPLETE
            ),
            "FailedResourceCount": sum(
                1 for r in resources if r.status == ResourceStatus.CREATE_FAILED
            ),
            "InProgressResourceCount": len(running),
            "PendingResourceCount": sum(
                1 for r in resources if r.status == ResourceStatus.INIT_COMPLETE
            ),
            "InProgressResourceDetails": [
                {
                    "ResourceName": r.logical_id,
                    "ResourceType": r.type,
                    "ProgressValue": (r.progress or (0, 1))[0],
                    "ProgressTargetValue": (r.progress or (0, 1))[1],
                }
                for r in running
            ],
        }
    return None


def stack_view(
    cloud: Cloud, stack: Stack, *, with_outputs: bool = True, progress: str = "Disabled"
) -> dict[str, Any]:
    view: dict[str, Any] = {
        **stack_summary(stack),
        "Description": stack.template.description,
        "TemplateDescription": stack.template.description,
        "Parameters": parameters(cloud, stack),
        "NotificationURLs": list(stack.notification_urls),
        "StackType": "ROS",
    }
    if with_outputs and str(stack.status).endswith(OUTPUT_STATUSES):
        view["Outputs"] = outputs_of(cloud, stack)
    error = stack.operation_error
    if error is not None:
        view["OperationInfo"] = {
            "Action": error.action,
            "Code": error.code,
            "Message": error.message,
            "LogicalResourceId": error.logical_id,
            "ResourceType": error.resource_type,
            "RequestId": error.request_id,
        }
    found = _progress(stack, progress)
    if found is not None:
        view["ResourceProgress"] = found
    return {k: v for k, v in view.items() if v is not None}


def stack_summary(stack: Stack) -> dict[str, Any]:
    view = {
        "StackId": stack.stack_id,
        "StackName": stack.name,
        "Status": str(stack.status),
        "StatusReason": stack.reason,
        "RegionId": stack.region,
        "CreateTime": api_time(stack.created_at),
        "UpdateTime": api_time(stack.updated_at),
        "TimeoutInMinutes": stack.timeout_minutes,
        "DisableRollback": stack.disable_rollback,
        "DeletionProtection": stack.deletion_protection,
        "StackType": "ROS",
        "Tags": tags(stack.tags),
    }
    return {k: v for k, v in view.items() if v is not None}


def event_view(event: StackEvent) -> dict[str, Any]:
    return {
        "EventId": event.event_id,
        "StackId": event.stack_id,
        "StackName": event.stack_name,
        "LogicalResourceId": event.logical_id,
        "PhysicalResourceId": event.physical_id,
        "ResourceType": event.resource_type,
        "Status": event.status,
        "StatusReason": event.reason,
        "CreateTime": api_time(event.created_at),
    }


def resource_view(stack: Stack, resource: StackResource) -> dict[str, Any]:
    view = {
        "LogicalResourceId": resource.logical_id,
        "PhysicalResourceId": resource.physical_id,
        "ResourceType": resource.type,
        "Status": str(resource.status),
        "StatusReason": resource.reason,
        "StackId": stack.stack_id,
        "StackName": stack.name,
        "CreateTime": api_time(resource.created_at),
        "UpdateTime": api_time(resource.updated_at),
    }
    return {k: v for k, v in view.items() if v is not None}
