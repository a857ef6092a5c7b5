"""What a run shows in the Prefect UI: a table artifact, a markdown summary with links to the
events that settled each step, and for each failed instance (or any asked for) its output as
a markdown artifact and a link to the whole output in OSS."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Literal
from urllib.parse import urlencode

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.settings import PREFECT_UI_URL
from prefect.utilities.urls import url_for

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.report import NOT_STARTED, EventRef, InstanceReport, RunReport
from alicloud_runbooks.report import output_markdown as render_output

FullOutputs = list[str] | Literal["all"] | None
"""Which instances get their output as artifacts besides the failed ones: ids, or "all"."""
MAX_OUTPUT_ARTIFACTS = 25
OUTPUT_LINK_HOURS = 24
TABLE_DESCRIPTION = (
    "{flow}: one row per instance. output_preview: the last 3 lines of the output (Cloud "
    "Assistant merges stdout and stderr into one output); the failed instances' full outputs "
    "are artifacts of their own."
)


def event_url(ref: EventRef) -> str | None:
    """The event's page in the Prefect UI (Prefect's own URL form), when the UI is known."""
    if ref.occurred is None:
        return None
    date = ref.occurred.astimezone(UTC).strftime("%Y-%m-%d")
    return url_for("received-event", obj_id=ref.id, occurred=date)


def feed_url(resource_id: str) -> str | None:
    """The UI's event feed filtered to one resource: the Alibaba events of an instance, and
    the runs' `runbooks.wait.settled` events that name it (each links its flow run)."""
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/events?{urlencode({'resource': resource_id})}" if ui else None


@task(name="publish-report")
def publish_report(report: RunReport, key: str) -> None:
    """Artifacts under a stable key, so the UI lists each runbook's runs side by side.

    Example (inside a flow):
        ```python
        publish_report(report, "run-command")
        ```
    """
    create_table_artifact(
        key=key, table=report.rows(), description=TABLE_DESCRIPTION.format(flow=report.flow)
    )
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=report.markdown(event_url, feed_url),
        description=f"{report.flow}: summary",
    )


def choose_outputs(
    instances: Sequence[InstanceReport], wanted: FullOutputs
) -> tuple[list[InstanceReport], list[str]]:
    """The rows whose output gets artifacts (the failed ones first, then those asked for) and
    the asked-for ids the run does not have."""
    if isinstance(wanted, str) and wanted != "all":
        raise ValueError(f'full_outputs is a list of instance ids, "all" or None (got {wanted!r})')
    by_id = {row.instance_id: row for row in instances}
    failed = [r for r in instances if not r.succeeded and r.status != NOT_STARTED]
    asked = list(by_id) if wanted == "all" else list(wanted or [])
    unknown = [i for i in asked if i not in by_id]
    chosen = {r.instance_id: r for r in failed}
    chosen.update({i: by_id[i] for i in asked if i in by_id})
    return [r for r in chosen.values() if r.output or r.oss_uri], unknown


def presigned_url(credentials: AlibabaCloudCredentials, oss_uri: str, seconds: int) -> str:
    """A GET URL for the OSS object that needs no credentials until it expires."""
    bucket, _, key = oss_uri.removeprefix("oss://").partition("/")
    return credentials.oss_bucket(bucket).sign_url("GET", key, seconds, slash_safe=True)


@task(name="publish-outputs")
def publish_outputs(
    credentials: AlibabaCloudCredentials | None,
    report: RunReport,
    full_outputs: FullOutputs = None,
) -> int:
    """For each failed instance, and each one in `full_outputs`: its output as a markdown
    artifact (head and tail when long) and a link artifact to the whole output in OSS (a
    presigned URL, valid `OUTPUT_LINK_HOURS`), at most `MAX_OUTPUT_ARTIFACTS` instances. The
    number published.

    Example (inside a flow):
        ```python
        publish_outputs(credentials, report, ["i-bp1…"])
        ```
    """
    logger = get_run_logger()
    rows, unknown = choose_outputs(report.instances, full_outputs)
    if unknown:
        logger.warning(
            "full_outputs names %d instance%s this run does not have: %s",
            len(unknown),
            "" if len(unknown) == 1 else "s",
            ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else ""),
        )
    for row in rows[:MAX_OUTPUT_ARTIFACTS]:
        link = None
        if row.oss_uri and credentials is not None:
            try:
                link = presigned_url(credentials, row.oss_uri, OUTPUT_LINK_HOURS * 3600)
            except Exception as exc:
                logger.warning(
                    "%s: no download link for %s (%s)", row.instance_id, row.oss_uri, exc
                )
        create_markdown_artifact(
            markdown=render_output(row, link, OUTPUT_LINK_HOURS if link else 0),
            description=f"Output of {row.instance_id} ({row.status})",
        )
        if link:
            create_link_artifact(
                link=link,
                link_text=f"{row.instance_id}: the whole output ({row.oss_uri})",
                description=f"Output of {row.instance_id} in OSS, a presigned URL valid "
                f"{OUTPUT_LINK_HOURS} h",
            )
    if len(rows) > MAX_OUTPUT_ARTIFACTS:
        logger.warning(
            "Outputs published for %d of %d instances; the others are in the table artifact "
            "and in OSS",
            MAX_OUTPUT_ARTIFACTS,
            len(rows),
        )
    return min(len(rows), MAX_OUTPUT_ARTIFACTS)
