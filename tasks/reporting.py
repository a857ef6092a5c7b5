"""What a run shows in the Prefect UI: a table artifact and a markdown summary."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from alicloud_runbooks.report import RunReport


@task(name="publish-report")
def publish_report(report: RunReport, key: str) -> None:
    """Artifacts under a stable key, so the UI lists each runbook's runs side by side."""
    create_table_artifact(
        key=key,
        table=report.rows(),
        description=f"{report.flow}: one row per instance",
    )
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=report.markdown(),
        description=f"{report.flow}: summary",
    )
