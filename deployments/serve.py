"""Serve the runbooks as deployments, without a work pool, on the Prefect server that
`PREFECT_API_URL` names: the deployments, parameters, schedules and triggers of prefect.yaml
(read from it, so the two never drift), with the credentials block chosen by name.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve --credentials alisim

Each run loads the block named by its `credentials_block` parameter when it starts, so a
block saved again later is picked up by the next run. `--default-chain` leaves the parameter
out: the flows then use `AlibabaCloudCredentials.from_environment()` in the serving
process's environment.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Collection, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from alicloud_runbooks.times import seconds_from_env

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentTriggerTypes
    from prefect.schedules import Schedule

PROJECT_FILE = Path(__file__).resolve().parent.parent / "prefect.yaml"
BLOCK_TYPE_SLUG = "alibaba-cloud-credentials"
DEFAULT_BLOCK = "alisim"
# How often the runner asks for scheduled runs: a triggered run waits for the next poll before
# it starts. Prefect's default (PREFECT_RUNNER_POLL_FREQUENCY) is 10 s; 1 s keeps a triggered
# run Running within about 2 s of its event for the cost of one small API call a second.
POLL_SECONDS_ENV = "RUNBOOKS_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 1.0


def poll_seconds_default() -> float:
    """`RUNBOOKS_POLL_SECONDS` if set (a positive number), else 1 s."""
    return seconds_from_env(POLL_SECONDS_ENV, DEFAULT_POLL_SECONDS)


def load_project(path: Path = PROJECT_FILE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        project = yaml.safe_load(handle)
    if not isinstance(project, dict) or not isinstance(project.get("deployments"), list):
        raise ValueError(f"{path}: no `deployments` list")
    return project


def load_flow(entrypoint: str) -> Flow[Any, Any]:
    """`flows/run_command.py:run_command` -> the flow object, imported as a module (the
    project is installed, so the served deployments use module-path entrypoints)."""
    from prefect import Flow

    path, _, name = entrypoint.rpartition(":")
    if not path or not name:
        raise ValueError(f"entrypoint {entrypoint!r} is not `path/to/file.py:flow_function`")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    found = getattr(module, name, None)
    if not isinstance(found, Flow):
        raise ValueError(f"entrypoint {entrypoint!r} is not a flow")
    return found


def schedule_of(spec: dict[str, Any]) -> Schedule:
    """One `schedules:` entry of prefect.yaml (cron, interval or rrule) as a Schedule."""
    from prefect.schedules import Cron, Interval, RRule

    common = {
        "timezone": spec.get("timezone"),
        "active": spec.get("active", True),
        "parameters": spec.get("parameters") or {},
        "slug": spec.get("slug"),
    }
    if "cron" in spec:
        return Cron(spec["cron"], day_or=spec.get("day_or", True), **common)
    if "interval" in spec:
        interval = spec["interval"]
        if isinstance(interval, int | float):
            interval = timedelta(seconds=interval)
        return Interval(interval, anchor_date=spec.get("anchor_date"), **common)
    if "rrule" in spec:
        return RRule(spec["rrule"], **common)
    raise ValueError(f"schedule {spec!r}: give one of cron, interval or rrule")


def triggers_of(
    deployment_name: str,
    specs: Sequence[dict[str, Any]],
    *,
    enable: bool | Collection[str] = False,
) -> list[DeploymentTriggerTypes]:
    """The `triggers:` entries, validated as `prefect deploy` does (same default names).
    `enable`: True switches on every trigger, a collection of names only those."""
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    adapter: TypeAdapter[DeploymentTriggerTypes] = TypeAdapter(DeploymentTriggerTypes)
    triggers = []
    for index, spec in enumerate(specs, start=1):
        spec = {"name": f"{deployment_name}__automation_{index}", **spec}
        if enable is True or (not isinstance(enable, bool) and spec["name"] in enable):
            spec["enabled"] = True
        triggers.append(adapter.validate_python(spec))
    return triggers


def build_deployments(
    credentials_block: str | None = DEFAULT_BLOCK,
    *,
    enable_triggers: bool | Collection[str] = False,
    project: Path = PROJECT_FILE,
) -> list[RunnerDeployment]:
    """One RunnerDeployment per prefect.yaml deployment. `credentials_block=None`: no block,
    the flows read credentials from the environment of the process that runs them."""
    from prefect.deployments.runner import EntrypointType

    deployments = []
    for spec in load_project(project)["deployments"]:
        flow = load_flow(spec["entrypoint"])
        parameters = dict(spec.get("parameters") or {})
        if credentials_block:
            parameters["credentials_block"] = credentials_block
        else:
            parameters.pop("credentials_block", None)
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                version=spec.get("version"),
                parameters=parameters,
                schedules=[schedule_of(s) for s in spec.get("schedules") or []],
                triggers=triggers_of(
                    spec["name"], spec.get("triggers") or [], enable=enable_triggers
                ),
                enforce_parameter_schema=spec.get("enforce_parameter_schema", True),
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


START_METHODS = ("forkserver", "spawn")


def start_runs_by_forkserver(modules: Sequence[str]) -> None:
    """Start each flow run from a fork server that has imported Prefect and the runbooks
    once, instead of a fresh interpreter per run (`spawn`, Prefect's way) that imports them
    again: that import is most of a triggered run's start (1-2 s on an idle 2-core machine,
    several under load). The runner starts a served flow with
    `prefect.flow_engine.run_flow_in_subprocess`, which asks its module's `multiprocessing`
    for a `spawn` context; this gives it a `forkserver` context instead (POSIX only). The
    child gets the run's environment from the runner explicitly, as with spawn. Prefect
    3.9.1's internals: check again when upgrading (tests/test_reactions.py runs through it)."""
    import multiprocessing
    import types

    import prefect.flow_engine as engine

    if getattr(engine, "multiprocessing", None) is not multiprocessing:
        logging.getLogger(__name__).warning(
            "this Prefect's flow engine does not start runs through `multiprocessing`: "
            "runs start Prefect's own way (spawn)"
        )
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["prefect.flow_engine", *modules])
    # Start the fork server now (it imports the modules once), not at the first run.
    warm = context.Process(target=_nothing)
    warm.start()
    warm.join()
    engine.multiprocessing = types.SimpleNamespace(  # type: ignore[attr-defined]
        get_context=lambda method=None: context, context=multiprocessing.context
    )


def _nothing() -> None:
    """What the warm-up process runs."""


def check_block(name: str) -> str | None:
    """None if the block can be loaded from the current Prefect server, else why not."""
    from prefect.exceptions import ObjectNotFound

    from alicloud_runbooks.blocks import AlibabaCloudCredentials

    try:
        AlibabaCloudCredentials.load(name)
    except (ObjectNotFound, ValueError) as exc:
        return f"no block {BLOCK_TYPE_SLUG}/{name} on this Prefect server ({exc})"
    return None


def serve(
    credentials_block: str | None = DEFAULT_BLOCK,
    *,
    enable_triggers: bool | Collection[str] = False,
    limit: int | None = None,
    poll_seconds: float | None = None,
    start_method: str = "forkserver",
) -> None:
    """Create or update the deployments and run their flow runs here until interrupted
    (Ctrl-C; SIGTERM makes Prefect's runner exit with SystemExit(0)). `poll_seconds`: how
    often the runner looks for runs to start (default `RUNBOOKS_POLL_SECONDS`, else 1 s).
    `start_method`: `forkserver` (each run forked from a process that has the runbooks
    imported) or `spawn` (Prefect's own: a fresh interpreter per run)."""
    from prefect import serve as prefect_serve

    if start_method not in START_METHODS:
        raise ValueError(f"start_method {start_method!r}: one of {', '.join(START_METHODS)}")
    deployments = build_deployments(credentials_block, enable_triggers=enable_triggers)
    if start_method == "forkserver":
        modules = {d.entrypoint.rpartition(".")[0] for d in deployments if d.entrypoint}
        start_runs_by_forkserver(sorted(modules))
    prefect_serve(
        *deployments,
        limit=limit,
        query_seconds=poll_seconds or poll_seconds_default(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.serve",
        description="Serve provision-and-run and run-command as deployments (see prefect.yaml).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--credentials",
        default=DEFAULT_BLOCK,
        metavar="BLOCK",
        help=f"name of the {BLOCK_TYPE_SLUG} block the runs use (default: %(default)s)",
    )
    which.add_argument(
        "--default-chain",
        action="store_true",
        help="no block: credentials from this process's environment (RAM role, env vars)",
    )
    parser.add_argument(
        "--enable-triggers",
        action="store_true",
        help="switch on the event triggers that prefect.yaml leaves disabled",
    )
    parser.add_argument(
        "--enable-trigger",
        action="append",
        default=[],
        metavar="NAME",
        help="switch on this trigger only (by its name in prefect.yaml); repeatable",
    )
    parser.add_argument("--limit", type=int, default=None, help="concurrent flow runs at most")
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=None,
        help=f"seconds between the runner's looks for runs to start (default "
        f"${POLL_SECONDS_ENV}, else {DEFAULT_POLL_SECONDS:g}): a triggered run starts at the "
        "next look",
    )
    parser.add_argument(
        "--start-method",
        choices=START_METHODS,
        default="forkserver",
        help="how each flow run's process starts: forked from a process with the runbooks "
        "imported (default), or a fresh interpreter (Prefect's spawn)",
    )
    args = parser.parse_args(argv)
    if args.poll_seconds is not None and args.poll_seconds <= 0:
        parser.error("--poll-seconds must be more than 0")
    block = None if args.default_chain else args.credentials
    if block and (problem := check_block(block)):
        print(
            f"deployments.serve: {problem}. Save one first, e.g. "
            f'AlibabaCloudCredentials(...).save("{block}"), or `runbooks up`.',
            file=sys.stderr,
        )
        return 2
    enable: bool | list[str] = args.enable_triggers or args.enable_trigger
    serve(
        block,
        enable_triggers=enable,
        limit=args.limit,
        poll_seconds=args.poll_seconds,
        start_method=args.start_method,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
