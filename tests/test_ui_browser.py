"""The Prefect UI of the local stack in a real headless browser (`scripts/ui_check.py`, also
`make ui-check`): the run's pages show its logs and artifact, never a connection error."""

from __future__ import annotations

from pathlib import Path

import pytest

from alisim.config import zero_delay_settings
from local_stack.stack import LocalStack
from scripts.ui_check import check_ui, find_chromium

CHROMIUM = find_chromium()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no browser: install Debian's chromium (apt-get install -y chromium; .ci/run "
    "does) or set CHROMIUM to one, to load the Prefect UI in headless chromium",
)
def test_the_ui_shows_the_run_and_its_artifact_in_a_browser(prefect_server, tmp_path) -> None:
    assert CHROMIUM is not None
    stack = LocalStack(sim_settings=zero_delay_settings())
    stack.start(prefect=prefect_server)
    try:
        shots = check_ui(stack, CHROMIUM, tmp_path, timeout=60)
    finally:
        stack.stop()
    assert [s.stem for s in shots] == [
        "run-logs-v2",
        "run-artifacts-v2",
        "summary-artifact-v2",
        "run-v1",
        "settling-event-v2",
        "instance-events-v1",
    ]
    assert all(Path(s).read_bytes().startswith(b"\x89PNG") for s in shots)
