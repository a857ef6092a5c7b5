"""`make ui-check`: the Prefect UI of the local stack, seen in a real headless browser.

Starts the local stack (`LocalStack`), runs `provision-and-run` once on it, then loads in
Debian's `chromium` (driven over the DevTools protocol, no browser download) the pages an
operator opens: in the default (v2) UI the flow run's page on its Logs and Artifacts tabs,
the run's markdown summary artifact (with its links to the events that settled each step) and
the page of an Alibaba event that settled the run; in the v1 UI the run's page and the event
feed of one of its instances, where the run's `runbooks.wait.settled` event links the run.
Each page must show the run (its name, state, its "N of N instances succeeded" log line or
summary, its artifact, the event's instance), and none may show "Can't connect to Server API"
or "Unable to connect to Prefect server" (what the UI shows when it calls an API that is not
its server's). A screenshot of every page is kept in
`--screenshots` (default build/ui-check/).

Usage: python -m scripts.ui_check [--chromium PATH] [--screenshots DIR]
Exit status: 0 when every page is right, 1 when one is not, 2 when no browser is found.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from local_stack.stack import LocalStack, flush_prefect_clients

# What the UI shows when it cannot reach the API it calls (a toast, and a card in v2).
CONNECTION_ERRORS = ("Can't connect to Server API", "Unable to connect to Prefect server")
BUCKET = "ui-check"
INSTANCES = 2
# On this machine, as root, with no network beyond 127.0.0.1.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1000",
    "--remote-debugging-port=0",
]


class UICheckFailed(Exception):
    """A page did not show what it should, or showed the UI's connection error."""


def find_chromium(explicit: str | None = None) -> str | None:
    """`--chromium`, else `$CHROMIUM`, else `chromium` on PATH (Debian's package)."""
    candidate = explicit or os.environ.get("CHROMIUM") or "chromium"
    return shutil.which(candidate)


class Chromium:
    """Headless chromium in its own process group and empty profile, one page driven
    over the DevTools protocol; `close()` stops the whole group."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="ui-check-chromium-")
        profile = Path(self._profile.name)
        self._log = open(profile / "chromium.log", "wb")  # noqa: SIM115 - the child writes it
        self._proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        try:
            self._ws = connect(self._page_socket(profile, timeout), max_size=None)
        except BaseException:
            self.close()
            raise

    def _page_socket(self, profile: Path, timeout: float) -> str:
        """Chromium writes the port it chose to `DevToolsActivePort` once it listens."""
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (active.exists() and len(active.read_text().split()) >= 2):
            if self._proc.poll() is not None:
                tail = (profile / "chromium.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium exited with {self._proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port in {timeout}s")
            time.sleep(0.05)
        port = int(active.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        request_id = next(self._ids)
        self._ws.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def text(self) -> str:
        """What the page shows now, as a reader sees it."""
        result = self.call(
            "Runtime.evaluate",
            expression="document.body ? document.body.innerText : ''",
            returnByValue=True,
        )
        return str(result.get("result", {}).get("value", ""))

    def screenshot(self, path: Path) -> Path:
        shot = self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
        self._log.close()
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class Page:
    """A page of the UI and the texts that show it loaded with this stack's data."""

    name: str
    url: str
    expect: list[str]


def run_once(stack: LocalStack) -> str:
    """One `provision-and-run` on the stack, as the demo runs it; its flow run id."""
    from flows.provision_and_run import provision_and_run
    from flows.steps import CommandSpec

    credentials = stack.credentials()
    credentials.oss_bucket(BUCKET).create_bucket()
    with stack.prefect_client_settings():
        state = asyncio.run(
            provision_and_run(
                count=INSTANCES,
                command=CommandSpec(script='echo "ui-check on $(hostname)"', output_bucket=BUCKET),
                credentials=credentials,
                return_state=True,
            )
        )
    flush_prefect_clients()  # the run's logs, for its Logs tab
    if not state.is_completed():
        raise UICheckFailed(f"the provision-and-run flow run ended {state.type.value}")
    return str(state.state_details.flow_run_id)


def settling_event(api: httpx.Client, flow_run_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """A TaskCompleted event that settled the run, found as an operator's script would: the
    run's `runbooks.wait.settled` events name the Alibaba events (`prefect.event.<id>`)."""
    deadline = time.monotonic() + timeout
    while True:
        settled = api.post(
            "/events/filter",
            json={
                "filter": {
                    "event": {"name": ["runbooks.wait.settled"]},
                    "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
                },
                "limit": 50,
            },
        ).json()["events"]
        ids = [
            r["prefect.resource.id"].removeprefix("prefect.event.")
            for e in settled
            for r in e["related"]
            if r.get("prefect.resource.role") == "settled-by"
        ]
        found = (
            api.post("/events/filter", json={"filter": {"id": {"id": ids}}, "limit": 50}).json()[
                "events"
            ]
            if ids
            else []
        )
        done = [e for e in found if e["event"] == "acs.ecs.CloudAssistant.TaskCompleted"]
        if done:
            return done[0]
        if time.monotonic() > deadline:
            raise UICheckFailed(f"flow run {flow_run_id} has no settling TaskCompleted event")
        time.sleep(0.5)


def pages(ui_url: str, api_url: str, flow_run_id: str) -> list[Page]:
    """The run's pages, with the names the UI must show, read from the stack's own API."""
    with httpx.Client(base_url=api_url, timeout=30) as api:
        run = api.get(f"/flow_runs/{flow_run_id}").json()
        artifacts = api.post(
            "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        ).json()
        event = settling_event(api, flow_run_id)
    summary = next((a for a in artifacts if (a["key"] or "").endswith("-summary")), None)
    if summary is None:
        raise UICheckFailed(f"flow run {flow_run_id} has no summary artifact in the API")
    done = f"{INSTANCES} of {INSTANCES} instances succeeded"  # the summary's heading
    # The log list renders what fits on the screen: look for the run's first lines.
    launched = f"Launched {INSTANCES} instances"
    run_page = f"{ui_url}/v2/runs/flow-run/{flow_run_id}"
    instance = event["resource"]["prefect.resource.id"]
    day = event["occurred"][:10]
    return [
        Page("run-logs-v2", f"{run_page}?tab=Logs", [run["name"], "Completed", launched]),
        Page("run-artifacts-v2", f"{run_page}?tab=Artifacts", [run["name"], summary["key"]]),
        Page(
            "summary-artifact-v2",
            f"{ui_url}/v2/artifacts/artifact/{summary['id']}",
            [done, "What settled each step"],
        ),
        Page("run-v1", f"{ui_url}/runs/flow-run/{flow_run_id}", [run["name"], launched]),
        # The Alibaba event that settled an instance's command, shown by the instance's name…
        Page(
            "settling-event-v2",
            f"{ui_url}/v2/events/event/{day}/{event['id']}",
            [event["event"], event["resource"]["prefect.resource.name"]],
        ),
        # … and the instance's feed, where the run's own event links the run.
        Page(
            "instance-events-v1",
            f"{ui_url}/events?resource={instance}",
            ["runbooks.wait.settled", run["name"]],
        ),
    ]


def _is_connection_error(line: str) -> bool:
    return any(error in line for error in CONNECTION_ERRORS)


def check_page(browser: Chromium, page: Page, screenshots: Path, timeout: float) -> Path:
    """Load the page and wait until it shows every expected text; fail as soon as it shows
    the connection error. The screenshot is taken either way."""
    browser.call("Page.navigate", url=page.url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            text = browser.text()
            if shown := [line for line in text.splitlines() if _is_connection_error(line)]:
                raise UICheckFailed(f"{page.url} shows: {shown[0].strip()}")
            missing = [e for e in page.expect if e not in text]
            if not missing:
                return screenshots / f"{page.name}.png"
            if time.monotonic() > deadline:
                raise UICheckFailed(
                    f"{page.url} did not show {missing} within {timeout:g}s; it shows:\n"
                    + text[:1500]
                )
            time.sleep(0.25)
    finally:
        browser.screenshot(screenshots / f"{page.name}.png")


def check_ui(
    stack: LocalStack, chromium: str, screenshots: Path, timeout: float = 60.0
) -> list[Path]:
    """Run the flow once on a started stack and check its pages in chromium; the screenshots."""
    screenshots.mkdir(parents=True, exist_ok=True)
    assert stack.prefect is not None
    flow_run_id = run_once(stack)
    ui_url = stack.prefect.ui_url
    shots = []
    with Chromium(chromium) as browser:
        for page in pages(ui_url, stack.api_url, flow_run_id):
            try:
                shots.append(check_page(browser, page, screenshots, timeout))
            except UICheckFailed as exc:
                ui_api = httpx.get(f"{ui_url}/ui-settings", timeout=10).json().get("api_url")
                raise UICheckFailed(
                    f"{exc}\nThe UI calls the API at {ui_api} (its /ui-settings); "
                    f"this stack's API is {stack.api_url}."
                ) from None
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", help="the browser to drive (default: chromium on PATH)")
    parser.add_argument("--screenshots", type=Path, default=Path("build/ui-check"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a page may take")
    args = parser.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(
            f"No browser: {args.chromium or os.environ.get('CHROMIUM') or 'chromium'} is not "
            "an executable on PATH. Install Debian's package (apt-get install -y chromium) "
            "or pass --chromium PATH.",
            file=sys.stderr,
        )
        return 2
    from alisim.config import zero_delay_settings

    print("Starting the local stack…", flush=True)
    with LocalStack(sim_settings=zero_delay_settings()) as stack:
        assert stack.prefect is not None
        print(f"Prefect UI {stack.prefect.ui_url}; running provision-and-run once…", flush=True)
        try:
            shots = check_ui(stack, chromium, args.screenshots, args.timeout)
        except UICheckFailed as exc:
            print(f"UI check failed: {exc}", file=sys.stderr)
            print(f"Screenshots: {args.screenshots}/", file=sys.stderr)
            return 1
    print("UI check passed: the run's pages and its artifact show this stack's run, and none")
    print("shows the UI's connection error. Screenshots:")
    for shot in shots:
        print(f"  {shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
