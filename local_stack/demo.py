"""`runbooks demo` and `runbooks up`: the whole local stack (a Prefect server, alisim with
realistic but shortened delays, the relay and the EventBridge rules), then either one run of
the event-driven `provision_and_run` runbook with its figures (demo), or the runbooks served
as deployments until Ctrl-C (up).

Everything listens on 127.0.0.1 and everything started here is stopped before returning,
on success, on error and on Ctrl-C or SIGTERM alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import statistics
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from alicloud_runbooks.report import RunReport
from alicloud_runbooks.text import plural
from local_stack.home import (
    DEFAULT_PREFECT_PORT,
    DEFAULT_RELAY_PORT,
    DEFAULT_SIM_PORT,
    HomeInUse,
    Piece,
    StackHome,
    StackState,
    default_home,
    now,
)
from local_stack.scale_out import ScaleOutPrefect
from local_stack.servers import PortTaken, ensure_free
from local_stack.stack import LocalStack, flush_prefect_clients

BUCKET = "runbooks-demo"
OUTPUTS_BUCKET = "runbooks-outputs"
CREDENTIALS_BLOCK = "alisim"
DEFAULT_TIME_SCALE = 0.1
INLINE_LIMIT = 24 * 1024
CHECKS = 700  # ~49 bytes a line: ~34 KB, over the 24 KB the API keeps inline

# Cloud Assistant replaces `{{ACS::…}}` (built-in) and `{{checks}}` (ours) on each instance.
SCRIPT = """\
set -eu
echo "== health report for {{ACS::InstanceId}} in {{ACS::RegionId}} =="
echo "invocation {{ACS::InvokeId}}, kernel $(uname -sr)"
echo "working directory: $(pwd)"
n=0
while [ "$n" -lt {{checks}} ]; do
  n=$((n + 1))
  printf 'check %04d of %04d on {{ACS::InstanceId}}: ok\\n' "$n" {{checks}}
done
echo "{{ACS::InstanceId}}: {{checks}} checks passed"
"""


# -- shared by demo and up ---------------------------------------------------------------


class _Stop(BaseException):
    """SIGTERM, turned into an exception that `except Exception` does not swallow, so that
    the `finally` blocks run."""


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt even where it was ignored (a background job of a
    script), SIGTERM raises _Stop: either way everything started is stopped."""

    def terminate(signum: int, frame: object) -> None:
        raise _Stop(f"signal {signum}")

    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_term = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


class _QuietTaskStates(logging.Filter):
    """Console only: a task that completed says so in the UI; its own log lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "prefect.task_runs"
            and record.getMessage().startswith("Finished in state Completed")
        )


def use_prefect_console_logging() -> None:
    """Prefect's console format (run names, colours) instead of the CLI's plain one, minus
    one 'Finished in state Completed()' line per task."""
    import prefect.main  # noqa: F401  (importing it sets up Prefect's logging: do it first)
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    for handler in list(root.handlers):
        if not isinstance(handler, PrefectConsoleHandler):
            root.removeHandler(handler)
    setup_logging(incremental=False)
    for handler in root.handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_QuietTaskStates())


def _sim_settings(time_scale: float) -> Any:
    from alisim.config import Settings

    # Linux boots in 20-40 s at scale 1: 2-4 s at the default 0.1. Event times to the
    # millisecond, so the reaction figures the demo prints mean something.
    return Settings(time_scale=time_scale, event_time_precision="milliseconds")


def _masked_relay_url(stack: LocalStack) -> str:
    return f"{stack.relay_url}?token=****"


def _start(stack: LocalStack, out: TextIO, scale_out: ScaleOutPrefect | None = None) -> None:
    if scale_out is None:
        print("Starting a Prefect server, alisim, the relay and the EventBridge rules…", file=out)
    else:
        print(
            "Starting PostgreSQL, Redis, two Prefect API servers, the Prefect services, alisim, "
            "two relay replicas behind a front and the EventBridge rules…",
            file=out,
        )
    started = time.monotonic()
    if scale_out is not None:
        scale_out.start()
    stack.start(prefect=scale_out)
    print(f"Stack up in {time.monotonic() - started:.1f}s:", file=out)
    if scale_out is not None:
        for line in scale_out.describe():
            print(line, file=out)
        for index, replica in enumerate(stack.relay_replicas, start=1):
            print(
                f"  relay replica {index}  {replica.url} -> {stack.api_urls[index - 1]}", file=out
            )
    print(f"  Prefect UI       {stack.prefect.ui_url}", file=out)  # type: ignore[union-attr]
    print(f"  Prefect API      {stack.api_url}", file=out)
    print(
        f"  alisim           {stack.sim.endpoint} (region {stack.sim_settings.region}, "  # type: ignore[union-attr]
        f"time scale {stack.sim_settings.time_scale:g})",
        file=out,
    )
    print(f"  relay            {_masked_relay_url(stack)}", file=out)
    for line in stack.subscribed:
        print(f"  EventBridge      {line}", file=out)


def _stop(stack: LocalStack, out: TextIO, scale_out: ScaleOutPrefect | None = None) -> None:
    """Every server, by its own handle, after this process's queued run logs and events."""
    stack.stop()
    if scale_out is None:
        print("Stopped the Prefect server, alisim and the relay.", file=out, flush=True)
        return
    flush_prefect_clients()
    pids = ", ".join(f"{name} {pid}" for name, pid in scale_out.pids().items())
    scale_out.stop()
    print(
        f"Stopped alisim, the relay replicas and their front, and by pid: {pids}.",
        file=out,
        flush=True,
    )


# -- the demo ----------------------------------------------------------------------------


def _flat_calls(calls: dict[str, Any]) -> dict[tuple[str, str], int]:
    """`/_alisim/calls` per product and action (`{"Ecs": {"RunInstances": 1}}`)."""
    flat: dict[tuple[str, str], int] = {}
    for product, actions in calls.items():
        if isinstance(actions, dict):
            for action, count in actions.items():
                flat[(product.lower(), action)] = int(count)
        else:  # a flat {action: count}, should the API ever answer so
            flat[("", product)] = int(actions)
    return flat


def _diff(after: dict[tuple[str, str], int], before: dict[tuple[str, str], int]) -> dict:
    spent = {k: n - before.get(k, 0) for k, n in after.items()}
    return {k: n for k, n in sorted(spent.items()) if n > 0}


def _calls_text(calls: dict[tuple[str, str], int]) -> str:
    if not calls:
        return "none"
    names = {"ecs": "ECS", "oss": "OSS", "eventbridge": "EventBridge", "ros": "ROS"}
    return ", ".join(
        f"{names.get(p, p)} {a} {n}" if p else f"{a} {n}" for (p, a), n in calls.items()
    )


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def results_table(report: RunReport) -> list[str]:
    """Two tables sharing the instance column: how each instance went, and its output."""
    steps = ("heartbeat", "result", "output")
    status_rows = [
        [
            i.instance_id,
            _cell(i.heartbeat_seconds),
            i.status,
            _cell(i.exit_code),
            _cell(i.duration_seconds, 1),
            "/".join(i.settled_by.get(s, "-") for s in steps),
        ]
        for i in report.instances
    ]
    output_rows = [
        [
            i.instance_id,
            f"{len(i.output.encode()):,} B, {i.output_source}" if i.output else i.output_source,
            i.oss_uri or "-",
            i.tail(1) or "-",
        ]
        for i in report.instances
    ]
    lines = _table(
        [
            "instance",
            "heartbeat s",
            "status",
            "exit code",
            "duration s",
            "settled by (heartbeat/result/output)",
        ],
        status_rows,
        right={1, 3, 4},
    )
    lines.append("")
    lines += _table(
        ["instance", "output", "OSS URI (full output)", "output preview (last line)"],
        output_rows,
        right=set(),
    )
    errors = [f"{i.instance_id}: {i.error}" for i in report.instances if i.error]
    if errors:
        lines += ["", "Errors:", *(f"  {e}" for e in errors)]
    return lines


def calls_summary(
    report: RunReport, runbook: dict[tuple[str, str], int], setup: dict[tuple[str, str], int]
) -> list[str]:
    """What the runbook spent, next to an estimate of what a 5 s polling loop would have
    spent, labelled as one (the measured comparison is `bench.side_by_side`)."""
    from local_stack import polling

    describe = {k: n for k, n in runbook.items() if k[1].startswith("Describe")}
    estimate = polling.estimate(report, 5.0)
    reactions = [ms for w in report.waits for ms in w.reaction_ms]
    lines = [
        f"API calls spent by the runbook: {sum(runbook.values())} ({_calls_text(runbook)})",
        f"  Describe* calls: {sum(describe.values())} (target: 0)"
        + (f": {_calls_text(describe)}" if describe else ""),
        f"  setup, not the runbook: {_calls_text(setup)}",
        f"A 5 s polling loop would have spent {estimate.total} Describe calls "
        f"({', '.join(f'{a} {n}' for a, n in estimate.calls.items()) or 'none'}) and noticed "
        f"each change {estimate.mean_notice_delay_seconds:.1f} s late on average.",
        "  (an ESTIMATE computed from this run's waits, not a polling run; for measured "
        "polling runbooks see `python -m bench.side_by_side` and the README's side-by-side "
        "figures)",
    ]
    if reactions:
        lines.append(
            f"The events arrived {statistics.mean(reactions):.0f} ms on average after the "
            f"source event (p50 {statistics.median(reactions):.0f} ms, "
            f"max {max(reactions):.0f} ms, {len(reactions)} events)."
        )
    return lines


def run_demo(
    instances: int = 3, time_scale: float = DEFAULT_TIME_SCALE, out: TextIO | None = None
) -> int:
    """Start the stack, run provision_and_run once, print the figures, stop the stack.
    0 if every instance succeeded, 1 otherwise (and on Ctrl-C)."""
    from prefect.exceptions import TerminationSignal  # a flow run's own SIGTERM handler

    out = out or sys.stdout
    use_prefect_console_logging()
    stack = LocalStack(sim_settings=_sim_settings(time_scale))
    try:
        with _stop_signals():
            _start(stack, out)
            return _demo_run(stack, instances, out)
    except (KeyboardInterrupt, _Stop, TerminationSignal):
        print("\nInterrupted; shutting down.", file=out)
        return 1
    finally:
        _stop(stack, out)


def _demo_run(stack: LocalStack, instances: int, out: TextIO) -> int:
    from flows.provision_and_run import provision_and_run
    from flows.steps import CommandSpec

    credentials = stack.credentials()
    credentials.oss_bucket(BUCKET).create_bucket()
    print(f"Created OSS bucket oss://{BUCKET} for the full outputs.\n", file=out)
    before = _flat_calls(stack.api_calls())
    print(
        f"Running provision-and-run on {instances} instances: a {CHECKS}-check health script "
        f"(~{CHECKS * 49 // 1024} KB of output each, over the {INLINE_LIMIT // 1024} KB the API "
        "keeps inline)…",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    with stack.prefect_client_settings():
        try:
            report: RunReport = asyncio.run(
                provision_and_run(
                    count=instances,
                    command=CommandSpec(
                        script=SCRIPT,
                        parameters={"checks": str(CHECKS)},
                        output_bucket=BUCKET,
                        output_prefix="runbooks",
                    ),
                    name="runbooks-demo",
                    tags={"runbook": "demo"},
                    on_failure="continue",
                    credentials=credentials,
                )
            )
        except Exception as exc:
            print(f"\nThe flow run failed: {type(exc).__name__}: {exc}", file=out)
            return 1
    seconds = time.monotonic() - started
    runbook = _diff(_flat_calls(stack.api_calls()), before)
    setup = before
    ok = len(report.instances) - len(report.failed)
    print(
        f"\nprovision-and-run: {ok} of {plural(len(report.instances), 'instance')} succeeded in "
        f"{seconds:.1f}s (instances {'deleted' if report.deleted else 'kept'}).\n",
        file=out,
    )
    for line in results_table(report):
        print(line, file=out)
    print("", file=out)
    for line in calls_summary(report, runbook, setup):
        print(line, file=out)
    print(
        f"\nThe run, its table artifact and its events are in the Prefect UI at "
        f"{stack.api_url.removesuffix('/api')} until the shutdown below.",
        file=out,
        flush=True,
    )
    return 0 if ok == len(report.instances) and report.instances else 1


# -- up ----------------------------------------------------------------------------------


def _up_banner(stack: LocalStack, enable_triggers: bool, home: StackHome) -> list[str]:
    from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET

    ui = stack.prefect.ui_url  # type: ignore[union-attr]
    return [
        "",
        f"Prefect UI:      {ui}",
        f"Prefect API:     PREFECT_API_URL={stack.api_url}",
        f"alisim endpoint: {stack.sim.endpoint}",  # type: ignore[union-attr]
        f"region: {stack.sim_settings.region}",
        "alisim key pair (public, local only):",
        f"ALIBABA_CLOUD_ACCESS_KEY_ID={DEFAULT_ACCESS_KEY_ID}",
        f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={DEFAULT_ACCESS_KEY_SECRET}",
        f"developer API:   {stack.sim_url}/_alisim/health",
        f"relay:           {_masked_relay_url(stack)}",
        f"RUNBOOKS_RELAY_TOKEN={stack.token}",
        f"relay accepts events of alisim's account only: "
        f"RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS={stack.sim_settings.account_id}",
        f"credentials block: alibaba-cloud-credentials/{CREDENTIALS_BLOCK} (saved)",
        f"OSS bucket for outputs: {OUTPUTS_BUCKET}",
        "event triggers: " + ("enabled" if enable_triggers else "as in prefect.yaml (disabled)"),
        f"home:            {home.path} (kept: Prefect's runs, blocks, automations and "
        "deployments; --fresh starts clean)"
        if len(stack.api_urls) == 1
        else f"home:            {home.path} (kept: the relay token and alisim's data; the "
        "scale-out PostgreSQL starts empty each time)",
        f"status:          runbooks status --home {home.path}",
        "",
        "Run the flows against it:",
        f"  UI:     {ui}/deployments -> provision-and-run or run-command -> Run",
        f"  shell:  export PREFECT_API_URL={stack.api_url}",
        "          prefect deployment run provision-and-run/provision-and-run --params "
        f"""'{{"count": 2, "command": {{"script": "uname -a", "output_bucket": """
        f""""{OUTPUTS_BUCKET}"}}}}'""",
        "          prefect deployment run run-command/run-command --params "
        """'{"command": {"script": "uname -a"}, "instance_ids": ["i-…"]}'""",
        "  Python: with PREFECT_API_URL set, pass "
        f'credentials=AlibabaCloudCredentials.load("{CREDENTIALS_BLOCK}") to the flows',
        '  relay:  curl -H "Authorization: Bearer $RUNBOOKS_RELAY_TOKEN" '
        f"-H 'content-type: application/json' -d @event.json {stack.relay_url}",
        "",
        "Serving the deployments; Ctrl-C stops everything.",
    ]


def _state(stack: LocalStack) -> StackState:
    assert stack.prefect is not None and stack.prefect.proc is not None
    assert stack.relay is not None
    me = os.getpid()
    return StackState(
        pid=me,
        started_at=now(),
        prefect=Piece(
            pid=stack.prefect.proc.pid,
            address=stack.prefect.ui_url,
            health_url=f"{stack.api_url}/health",
        ),
        alisim=Piece(pid=me, address=stack.sim_url, health_url=f"{stack.sim_url}/_alisim/health"),
        relay=Piece(pid=me, address=stack.relay_url, health_url=f"{stack.relay.url}/healthz"),
    )


def run_up(
    time_scale: float = DEFAULT_TIME_SCALE,
    enable_triggers: bool = False,
    out: TextIO | None = None,
    *,
    home: Path | None = None,
    fresh: bool = False,
    prefect_port: int = DEFAULT_PREFECT_PORT,
    sim_port: int = DEFAULT_SIM_PORT,
    relay_port: int = DEFAULT_RELAY_PORT,
    backend: str = "sqlite",
) -> int:
    """Start the stack on fixed ports with a kept home, save the `alisim` credentials block,
    serve the deployments until Ctrl-C or SIGTERM, then stop everything. 0 on a clean stop,
    2 when a port is taken or another stack runs on the home.

    `backend="scale-out"`: Prefect on PostgreSQL and Redis (`ScaleOutPrefect`), its API on
    `prefect_port` and a second API server on a free port; its database starts empty each time
    (in a temporary directory), while the home keeps the token and alisim's data."""
    from prefect.exceptions import TerminationSignal

    out = out or sys.stdout
    kept = StackHome(home or default_home())
    try:
        kept.ensure_idle()
        ensure_free(
            "127.0.0.1",
            {"--prefect-port": prefect_port, "--sim-port": sim_port, "--relay-port": relay_port},
        )
        kept.prepare(fresh=fresh)
    except (PortTaken, HomeInUse, NotADirectoryError) as exc:
        print(f"runbooks up: {exc}", file=sys.stderr)
        return 2
    use_prefect_console_logging()
    stack = LocalStack(
        sim_settings=_sim_settings(time_scale),
        token=kept.token(),
        prefect_port=prefect_port,
        sim_port=sim_port,
        relay_port=relay_port,
        prefect_home=kept.prefect,
        sim_data_dir=kept.alisim,
    )
    scale_out = ScaleOutPrefect(api_ports=[prefect_port, None]) if backend == "scale-out" else None
    wrote_state = False
    status = 0
    try:
        with _stop_signals():
            try:
                _start(stack, out, scale_out)
            except RuntimeError as exc:  # MissingServer too: says what to install
                print(f"runbooks up: {exc}", file=sys.stderr)
                return 1
            kept.write_state(_state(stack))
            wrote_state = True
            with stack.prefect_client_settings():
                credentials = stack.credentials()
                credentials.save(CREDENTIALS_BLOCK, overwrite=True)
                credentials.oss_bucket(OUTPUTS_BUCKET).create_bucket()
                for line in _up_banner(stack, enable_triggers, kept):
                    print(line, file=out)
                out.flush()
                from deployments.serve import serve

                # The served runs' waits ask the relay's /healthz when events stop coming.
                os.environ.setdefault("RUNBOOKS_RELAY_URL", stack.relay_url)

                # Prefect's runner replaces the SIGTERM handler with one that raises
                # SystemExit(0) (and warns of a coroutine it never awaits, a Prefect 3.8
                # slip); Ctrl-C ends `serve` by returning.
                warnings.filterwarnings(
                    "ignore", message="coroutine 'Runner.astop' was never awaited"
                )
                try:
                    serve(CREDENTIALS_BLOCK, enable_triggers=enable_triggers)
                except Exception as exc:  # the runner's own errors: one line, not a traceback
                    print(
                        f"runbooks up: serving the deployments failed ({type(exc).__name__}: "
                        f"{exc}); is the Prefect server still up? Its log: "
                        f"{stack.prefect.log_path}",  # type: ignore[union-attr]
                        file=sys.stderr,
                    )
                    status = 1
    except (KeyboardInterrupt, _Stop, TerminationSignal, SystemExit):
        pass
    finally:
        print("\nShutting down…", file=out, flush=True)
        _stop(stack, out, scale_out)
        if wrote_state:
            kept.clear_state()
    return status
