"""`runbooks doctor`: is this account set up for the runbooks? One line per check, in order,
✓ or ✗ (- when not checked: an earlier check failed, or no bucket was given), and the fix
under each ✗:

1. credentials: STS GetCallerIdentity (needs no permission) gives the account id;
2. region: ECS answers for it;
3. each permission a runbook needs: DryRun calls where the API has them (RunInstances,
   DeleteInstances), a harmless read or a call on a probe id that does not exist otherwise;
4. the three EventBridge rules of `runbooks subscribe` exist, are enabled, match the planned
   patterns, and push to the given relay URL with the given token;
5. a test push: a synthetic CloudEvent with a unique id through the relay, found in Prefect;
6. the dead-letter queue on each rule's relay target.

Nothing here creates or deletes anything but the one test event. Secrets (keys, the token)
never appear in what it prints.
"""

from __future__ import annotations

import hmac
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_eventbridge20200401 import models as eb
from pydantic import BaseModel, SecretStr

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.errors import AlibabaCloudError, call
from alicloud_runbooks.events.mapping import prefect_event_id
from alicloud_runbooks.instance_states import FORWARDED_INSTANCE_STATES
from alicloud_runbooks.subscribe import (
    INSTANCE_STATE_RULE,
    TARGET_ID,
    as_planned,
    relay_target_url,
    rule_plans,
)

POLICY = "docs/ram/runbooks.json"
SUBSCRIBE_POLICY = "docs/ram/subscribe.json"
PROBE_INSTANCE = "i-runbooksdoctorprobe0"
PROBE_INVOCATION = "t-runbooksdoctorprobe0"
PROBE_KEY = "runbooks-doctor/probe-that-does-not-exist"
DOCTOR_EVENT_TYPE = "ecs:RunbooksDoctor:Ping"
MNS_QUEUE_ARN = re.compile(
    r"^acs:mns:(?P<region>[a-z0-9-]+):(?P<account>\d+):/queues/(?P<queue>[A-Za-z0-9][A-Za-z0-9-]*)$"
)
# What the runbooks call (docs/ram/runbooks.json), in the order they are checked.
PERMISSIONS = (
    "ecs:RunInstances",
    "ecs:DeleteInstances",
    "ecs:DescribeInstances",
    "ecs:DescribeCloudAssistantStatus",
    "ecs:RunCommand",
    "ecs:DescribeInvocations",
    "ecs:DescribeInvocationResults",
    "ecs:StopInvocation",
    "oss:GetObject",
)
DEFAULT_IMAGE = "aliyun_3_x64_20G_alibase_20240819.vhd"  # provision-and-run's default
DEFAULT_INSTANCE_TYPE = "ecs.g7.large"


class DoctorConfig(BaseModel):
    """What the doctor checks against: the runbooks' credentials and region, the relay and
    its token, the Prefect API the relay writes to, and the expected dead-letter queue."""

    relay_url: str
    token: SecretStr
    credentials: AlibabaCloudCredentials
    prefect_api_url: str
    prefect_api_key: SecretStr | None = None
    bus: str = "default"
    dead_letter_arn: str | None = None
    output_bucket: str | None = None
    account_id: str | None = None
    image_id: str = DEFAULT_IMAGE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    vswitch_id: str | None = None
    security_group_id: str | None = None
    push_timeout: float = 30.0


@dataclass(frozen=True)
class Check:
    mark: Literal["✓", "✗", "-"]
    title: str
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        shown = [f"{self.mark} {self.title}: {self.detail}"]
        if self.fix:
            shown.append(f"    fix: {self.fix}")
        return shown


def ok(title: str, detail: str) -> Check:
    return Check("✓", title, detail)


def bad(title: str, detail: str, fix: str) -> Check:
    return Check("✗", title, detail, fix)


def skipped(title: str, why: str) -> Check:
    return Check("-", title, f"not checked: {why}")


_CREDENTIAL_FIXES = {
    "InvalidAccessKeyId.NotFound": "the AccessKey ID does not exist: set "
    "ALIBABA_CLOUD_ACCESS_KEY_ID to an active AccessKey of the RAM user (RAM console → Users "
    "→ the user → AccessKey)",
    "InvalidAccessKeyId.Inactive": "the AccessKey is disabled: enable it or create another",
    "SignatureDoesNotMatch": "the AccessKey secret does not match the AccessKey ID: set "
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET to that key's secret (it is shown once, when the key is "
    "created: create a new key if it is lost)",
    "IncompleteSignature": "the AccessKey secret does not match the AccessKey ID: set "
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET to that key's secret",
    "InvalidSecurityToken.Expired": "the STS token has expired: assume the role again and "
    "set ALIBABA_CLOUD_SECURITY_TOKEN",
    "InvalidSecurityToken.Malformed": "the STS token is malformed: copy it again",
    "InvalidSecurityToken.MismatchWithAccessKey": "the STS token belongs to another AccessKey",
    "NoCredentials": "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (or "
    "a profile or RAM role the alibabacloud-credentials chain finds)",
}


def is_denied(code: str) -> bool:
    """Alibaba's permission errors: `Forbidden.RAM`, `Forbidden.NoPermission`, `NoPermission`,
    OSS `AccessDenied`, …"""
    return code.startswith(("Forbidden", "NoPermission", "AccessDenied", "Unauthorized"))


def _without_token(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    token = next((v for k, v in query if k == "token"), None)
    rest = urlencode([(k, v) for k, v in query if k != "token"])
    return urlunsplit(parts._replace(query=rest)), token


def _target_url(target: dict[str, Any]) -> str:
    for param in target.get("ParamList") or []:
        if param.get("ResourceKey") == "url" and param.get("Value"):
            return str(param["Value"])
    return str(target.get("Endpoint") or "")


class Doctor:
    def __init__(self, config: DoctorConfig) -> None:
        self.config = config
        self.credentials = config.credentials
        self.region = config.credentials.region_id
        self.account: str | None = config.account_id
        self.credentials_ok = False
        self.targets: dict[str, dict[str, Any] | None] = {}

    # -- 1, 2 ----------------------------------------------------------------------------

    def check_credentials(self) -> Check:
        title = "credentials"
        try:
            body = call(
                "GetCallerIdentity",
                lambda: self.credentials.sts_client().get_caller_identity().body,
            )
        except AlibabaCloudError as exc:
            fix = _CREDENTIAL_FIXES.get(exc.code)
            if exc.code == "EndpointUnreachable":
                fix = "check the network, or --endpoint/--protocol for a local cloud"
            return bad(
                title,
                f"STS GetCallerIdentity refused them: {exc.code}: {_short(exc)}",
                fix or "check the key pair",
            )
        self.credentials_ok = True
        self.account = body.account_id
        who = f"{body.identity_type or 'identity'} {body.arn}" if body.arn else body.identity_type
        return ok(
            title, f"account {body.account_id} ({who}); STS GetCallerIdentity needs no permission"
        )

    def check_region(self) -> Check:
        title = f"region {self.region}"
        if not self.credentials_ok:
            return skipped(title, "needs valid credentials")
        request = ecs.DescribeInstancesRequest(region_id=self.region, max_results=10)
        try:
            call(
                "DescribeInstances",
                lambda: self.credentials.ecs_client().describe_instances(request),
            )
        except AlibabaCloudError as exc:
            if exc.code.startswith("InvalidRegionId") or exc.code == "EndpointUnreachable":
                return bad(
                    title,
                    f"ECS does not answer for it: {exc.code}: {_short(exc)}",
                    "use a region id ECS serves, e.g. cn-hangzhou (--region or "
                    "ALIBABA_CLOUD_REGION_ID)",
                )
            if not is_denied(exc.code):
                return bad(title, f"{exc.code}: {_short(exc)}", "see the error above")
        return ok(title, "ECS answers for it")

    # -- 3 -------------------------------------------------------------------------------

    def _probe(self, action: str, how: str, fn: Callable[[], Any]) -> Check:
        title = f"ecs:{action}" if not action.startswith("oss:") else action
        try:
            call(action, fn)
        except AlibabaCloudError as exc:
            return self._judge(title, how, exc.code, _short(exc))
        return ok(title, f"allowed ({how})")

    def _judge(self, title: str, how: str, code: str, message: str) -> Check:
        if code == "DryRunOperation":
            return ok(title, "allowed (DryRun: the request would have succeeded)")
        if is_denied(code):
            return bad(
                title,
                f"denied: {code}: {message}",
                f"grant {title} to the RAM user or role of these credentials ({POLICY})",
            )
        if code.endswith("NotFound") or code in {"NoSuchKey", "InvalidInvokeId.NotFound"}:
            return ok(title, f"allowed ({how}: {code}, as expected)")
        return bad(
            title,
            f"refused: {code}: {message}",
            "the call was allowed but refused for this reason; a runbook would meet it too",
        )

    def permission_checks(self) -> Iterator[Check]:
        if not self.credentials_ok:
            for title in PERMISSIONS:
                yield skipped(title, "needs valid credentials")
            return
        client = self.credentials.ecs_client()
        region = self.region
        c = self.config
        yield self._probe(
            "RunInstances",
            "DryRun",
            lambda: client.run_instances(
                ecs.RunInstancesRequest(
                    region_id=region,
                    image_id=c.image_id,
                    instance_type=c.instance_type,
                    v_switch_id=c.vswitch_id,
                    security_group_id=c.security_group_id,
                    amount=1,
                    dry_run=True,
                )
            ),
        )
        yield self._probe(
            "DeleteInstances",
            f"DryRun on the probe id {PROBE_INSTANCE}",
            lambda: client.delete_instances(
                ecs.DeleteInstancesRequest(
                    region_id=region, instance_id=[PROBE_INSTANCE], force=True, dry_run=True
                )
            ),
        )
        yield self._probe(
            "DescribeInstances",
            "a read",
            lambda: client.describe_instances(
                ecs.DescribeInstancesRequest(region_id=region, max_results=10)
            ),
        )
        yield self._probe(
            "DescribeCloudAssistantStatus",
            "a read",
            lambda: client.describe_cloud_assistant_status(
                ecs.DescribeCloudAssistantStatusRequest(region_id=region, max_results=10)
            ),
        )
        yield self._probe(
            "RunCommand",
            f"no DryRun in this API: a call on the probe instance {PROBE_INSTANCE}",
            lambda: client.run_command(
                ecs.RunCommandRequest(
                    region_id=region,
                    type="RunShellScript",
                    command_content="true",
                    instance_id=[PROBE_INSTANCE],
                )
            ),
        )
        yield self._probe(
            "DescribeInvocations",
            "a read",
            lambda: client.describe_invocations(
                ecs.DescribeInvocationsRequest(region_id=region, max_results=10)
            ),
        )
        yield self._probe(
            "DescribeInvocationResults",
            "a read",
            lambda: client.describe_invocation_results(
                ecs.DescribeInvocationResultsRequest(region_id=region, max_results=10)
            ),
        )
        yield self._probe(
            "StopInvocation",
            f"a call on the probe invocation {PROBE_INVOCATION}",
            lambda: client.stop_invocation(
                ecs.StopInvocationRequest(region_id=region, invoke_id=PROBE_INVOCATION)
            ),
        )
        yield self._check_oss()

    def _check_oss(self) -> Check:
        title = "oss:GetObject"
        bucket = self.config.output_bucket
        if not bucket:
            return skipped(title, "pass --output-bucket (the runbooks' output_bucket)")
        import oss2

        try:
            self.credentials.oss_bucket(bucket).get_object(PROBE_KEY).read()
        except oss2.exceptions.OssError as exc:
            code = str(exc.code or exc.status)
            if code == "NoSuchBucket":
                return bad(
                    title,
                    f"bucket {bucket} does not exist in {self.region}",
                    "create it in the runbooks' region, or pass the right --output-bucket",
                )
            return self._judge(
                title, f"a read of a probe key in {bucket}", code, str(exc.message or "")
            )
        return ok(title, f"allowed on {bucket}")

    # -- 4, 6 ----------------------------------------------------------------------------

    def rule_checks(self) -> Iterator[Check]:
        expected_url = relay_target_url(self.config.relay_url)
        token = self.config.token.get_secret_value()
        fix = (
            f"runbooks subscribe --target-url {expected_url} (with the relay's token in "
            f"RUNBOOKS_RELAY_TOKEN) creates or repairs the rules"
        )
        plans = rule_plans()
        if not self.credentials_ok:
            for plan in plans:
                yield skipped(f"rule {plan.name}", "needs valid credentials")
            return
        client = self.credentials.eventbridge_client()
        for plan in plans:
            title = f"rule {plan.name}"
            self.targets[plan.name] = None
            try:
                rule = call(
                    "GetRule",
                    lambda p=plan: (
                        client.get_rule(
                            eb.GetRuleRequest(event_bus_name=self.config.bus, rule_name=p.name)
                        ).body.data
                    ),
                )
            except AlibabaCloudError as exc:
                if is_denied(exc.code):
                    yield bad(
                        title,
                        f"cannot read it: {exc.code}",
                        f"grant eventbridge:GetRule ({SUBSCRIBE_POLICY})",
                    )
                elif "NotExist" in exc.code or "NotFound" in exc.code:
                    yield bad(title, f"missing on bus {self.config.bus}", fix)
                else:
                    yield bad(title, f"{exc.code}: {_short(exc)}", fix)
                continue
            data = rule.to_map()
            problems = []
            if data.get("Status") != "ENABLE":
                problems.append(f"status {data.get('Status')}")
            try:
                pattern = json.loads(data.get("FilterPattern") or "null")
            except ValueError:
                pattern = None
            if not as_planned(plan, pattern):
                needs = (
                    f" (it may forward more states, never fewer than "
                    f"{', '.join(FORWARDED_INSTANCE_STATES)})"
                    if plan.name == INSTANCE_STATE_RULE
                    else ""
                )
                problems.append(
                    f"pattern {data.get('FilterPattern')} is not {json.dumps(plan.pattern)}{needs}"
                )
            target = next((t for t in data.get("Targets") or [] if t.get("Id") == TARGET_ID), None)
            if target is None:
                problems.append(f"no target {TARGET_ID}")
            else:
                self.targets[plan.name] = target
                url, pushed_token = _without_token(_target_url(target))
                if url.rstrip("/") != expected_url:
                    problems.append(f"pushes to {url}, not {expected_url}")
                elif not pushed_token or not hmac.compare_digest(
                    pushed_token.encode(), token.encode()
                ):
                    problems.append("its target carries another token than the relay's")
            if problems:
                yield bad(title, "; ".join(problems), fix)
            else:
                yield ok(
                    title,
                    f"enabled, pattern as planned, pushes to {expected_url} with the relay's token",
                )

    def dead_letter_checks(self) -> Iterator[Check]:
        expected = self.config.dead_letter_arn
        fix_arn = (
            expected
            or f"acs:mns:{self.region}:{self.account or '<account id>'}:/queues/runbooks-relay-dlq"
        )
        fix = (
            f"create the MNS queue first, then runbooks subscribe --dead-letter-arn {fix_arn} "
            f"--target-url {relay_target_url(self.config.relay_url)}"
        )
        for plan in rule_plans():
            title = f"dead-letter queue of {plan.name}"
            if plan.name not in self.targets:
                yield skipped(title, "needs valid credentials")
                continue
            target = self.targets[plan.name]
            if target is None:
                yield skipped(title, "the rule or its relay target is missing (above)")
                continue
            arn = ((target.get("DeadLetterQueue") or {}).get("Arn")) or ""
            problems = []
            match = MNS_QUEUE_ARN.match(arn)
            if not arn:
                problems.append("none set: events EventBridge gives up on are lost")
            elif expected and arn != expected:
                problems.append(f"{arn} is not {expected}")
            elif not match and arn.startswith("acs:mns:"):
                problems.append(
                    f"{arn} is not an MNS queue ARN acs:mns:<region>:<account id>:/queues/<name>"
                )
            elif match and match["region"] != self.region:
                problems.append(f"{arn} is in region {match['region']}, not {self.region}")
            elif match and self.account and match["account"] != self.account:
                problems.append(f"{arn} names account {match['account']}, not {self.account}")
            if target.get("ErrorsTolerance") != "ALL":
                problems.append(
                    f"ErrorsTolerance is {target.get('ErrorsTolerance')!r}: only ALL sends "
                    "failed events to the dead-letter queue"
                )
            if problems:
                yield bad(title, "; ".join(problems), fix)
            else:
                yield ok(title, f"{arn} (ErrorsTolerance ALL)")

    # -- 5 -------------------------------------------------------------------------------

    def check_push(self) -> Check:
        title = "test push through the relay into Prefect"
        if not self.account:
            return skipped(title, "needs the account id (valid credentials or --account-id)")
        source_id = f"runbooks-doctor-{uuid.uuid4()}"
        event = {
            "specversion": "1.0",
            "id": source_id,
            "source": "acs.ecs",
            "type": DOCTOR_EVENT_TYPE,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "aliyunaccountid": self.account,
            "aliyunregionid": self.region,
            "aliyuneventbusname": self.config.bus,
            "data": {"note": "a test event of runbooks doctor; nothing reacts to it"},
        }
        url = relay_target_url(self.config.relay_url)
        headers = {"Authorization": f"Bearer {self.config.token.get_secret_value()}"}
        try:
            response = httpx.post(url, json=event, headers=headers, timeout=15)
        except httpx.HTTPError as exc:
            return bad(
                title,
                f"cannot reach the relay at {url}: {type(exc).__name__}",
                "start the relay (runbooks relay, or its Function Compute function) and check "
                "--relay-url",
            )
        reason = _reason(response)
        if response.status_code == 401:
            return bad(
                title,
                "the relay refused the token (401)",
                "pass the relay's own token (--token or RUNBOOKS_RELAY_TOKEN, as the relay was "
                "started with)",
            )
        if response.status_code == 403:
            return bad(
                title,
                f"the relay refused the event (403: {reason})",
                f"add {self.account} to the relay's RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS (and "
                "acs.ecs to RUNBOOKS_RELAY_ALLOWED_SOURCES, if that is set)",
            )
        if response.status_code == 503:
            return bad(
                title,
                f"the relay cannot write to Prefect (503: {reason})",
                "check the relay's PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud)",
            )
        if response.status_code >= 300:
            return bad(
                title, f"the relay answered {response.status_code}: {reason}", "see the relay's log"
            )
        started = time.monotonic()
        found = self._find_in_prefect(prefect_event_id(source_id))
        if isinstance(found, Check):
            return found
        if found is None:
            return bad(
                title,
                f"the relay accepted it, but {self.config.prefect_api_url} has not stored it "
                f"within {self.config.push_timeout:g} s",
                "point the relay and this command at the same Prefect (the relay's "
                "PREFECT_API_URL and this PREFECT_API_URL / --prefect-api-url)",
            )
        return ok(
            title,
            f"the relay accepted it and Prefect stored it as {found} after "
            f"{time.monotonic() - started:.1f} s",
        )

    def _find_in_prefect(self, event_id: str) -> str | Check | None:
        api = self.config.prefect_api_url.rstrip("/")
        headers = {}
        if self.config.prefect_api_key:
            headers["Authorization"] = f"Bearer {self.config.prefect_api_key.get_secret_value()}"
        now = datetime.now(UTC)
        query = {
            "filter": {
                "id": {"id": [event_id]},
                "occurred": {
                    "since": (now - timedelta(minutes=10)).isoformat(),
                    "until": (now + timedelta(minutes=10)).isoformat(),
                },
            },
            "limit": 1,
        }
        deadline = time.monotonic() + self.config.push_timeout
        with httpx.Client(timeout=10, headers=headers) as http:
            while True:
                try:
                    response = http.post(f"{api}/events/filter", json=query)
                except httpx.HTTPError as exc:
                    return bad(
                        "test push through the relay into Prefect",
                        f"cannot read Prefect's events at {api}: {type(exc).__name__}",
                        "set PREFECT_API_URL (or --prefect-api-url) to the Prefect the relay "
                        "writes to",
                    )
                if response.status_code in (401, 403):
                    return bad(
                        "test push through the relay into Prefect",
                        f"Prefect refused to list events ({response.status_code})",
                        "set PREFECT_API_KEY for Prefect Cloud",
                    )
                if response.status_code == 200 and (events := response.json().get("events")):
                    return str(events[0].get("event"))
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.5)

    # -- all -----------------------------------------------------------------------------

    def checks(self) -> Iterator[Check]:
        yield self.check_credentials()
        yield self.check_region()
        yield from self.permission_checks()
        yield from self.rule_checks()
        yield self.check_push()
        yield from self.dead_letter_checks()


def _short(exc: AlibabaCloudError) -> str:
    """Alibaba's message and the request id (for a support ticket), without the advice meant
    for runbook users: the doctor gives its own fix."""
    return exc.message + (f" [request id {exc.request_id}]" if exc.request_id else "")


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text[:200])
    except ValueError:
        return response.text[:200]


def run_doctor(config: DoctorConfig, out: TextIO | None = None) -> int:
    """Print each check as it completes; 0 when none failed, 1 otherwise."""
    out = out or sys.stdout
    marks = {"✓": 0, "✗": 0, "-": 0}
    for check in Doctor(config).checks():
        marks[check.mark] += 1
        for line in check.lines():
            print(line, file=out, flush=True)
    print(
        f"\n{marks['✓']} passed, {marks['✗']} failed, {marks['-']} not checked.",
        file=out,
        flush=True,
    )
    return 1 if marks["✗"] else 0
