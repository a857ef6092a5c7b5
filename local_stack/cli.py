"""`runbooks`: the command line of the project (alisim, the demo, and more to come)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")


def _sim(args: argparse.Namespace) -> int:
    import uvicorn

    from alisim.app import create_app
    from alisim.cloud import Cloud
    from alisim.config import (
        DEFAULT_ACCESS_KEY_ID,
        DEFAULT_ACCESS_KEY_SECRET,
        Settings,
        zero_delay_settings,
    )
    from alisim.exposure import TRUSTED_PROXIES, RemoteBindRefused, check_bind

    try:
        check_bind(args.host, args.allow_remote)
    except RemoteBindRefused as exc:
        print(f"runbooks sim: {exc}", file=sys.stderr)
        return 2
    from local_stack.servers import PortTaken, bind

    try:
        sock = bind(args.host, args.port, "--port")
    except PortTaken as exc:
        print(f"runbooks sim: {exc}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    settings = zero_delay_settings() if args.zero_boot else Settings()
    settings.time_scale = args.time_scale
    if args.region:
        settings.region = args.region
    cloud = Cloud(settings)
    print(f"alisim endpoint: {args.host}:{port}", flush=True)
    print(f"region: {settings.region}")
    if args.allow_remote:
        # alisim's own fresh key, printed to its own terminal: the only way to hand it over.
        key = cloud.credentials.open_to_remote()
        print(f"ALIBABA_CLOUD_ACCESS_KEY_ID={key.access_key_id}")
        print(f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={key.access_key_secret}")
        print(
            "open to other hosts: remote clients must use this fresh key pair (the published "
            f"{DEFAULT_ACCESS_KEY_ID} works from loopback only); /_alisim/* needs "
            "'Authorization: Bearer <AccessKeyId>:<AccessKeySecret>'"
        )
    else:
        print(f"ALIBABA_CLOUD_ACCESS_KEY_ID={DEFAULT_ACCESS_KEY_ID}")
        print(f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={DEFAULT_ACCESS_KEY_SECRET}")
    print(f"developer API: http://{args.host}:{port}/_alisim/health", flush=True)
    config = uvicorn.Config(
        create_app(cloud),
        host=args.host,
        port=port,
        log_level=args.log_level,
        access_log=False,
        timeout_keep_alive=30,
        backlog=2048,
        proxy_headers=True,
        forwarded_allow_ips=TRUSTED_PROXIES,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _demo(args: argparse.Namespace) -> int:
    from local_stack.demo import run_demo

    return run_demo(instances=args.instances, time_scale=args.time_scale)


def _up(args: argparse.Namespace) -> int:
    from local_stack.demo import run_up

    return run_up(
        time_scale=args.time_scale,
        enable_triggers=args.enable_triggers,
        home=args.home,
        fresh=args.fresh,
        prefect_port=args.prefect_port,
        sim_port=args.sim_port,
        relay_port=args.relay_port,
        backend=args.backend,
    )


def _status(args: argparse.Namespace) -> int:
    from local_stack.status import run_status

    return run_status(args.home)


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535; 0 picks a free one)")
    return number


def _home(value: str) -> Path:
    return Path(value).expanduser()


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def _relay(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from alicloud_runbooks.relay.app import create_app
    from alicloud_runbooks.relay.settings import RelaySettings

    overrides = {"token": args.token} if args.token else {}
    try:
        settings = RelaySettings(**overrides)
    except ValidationError as exc:
        missing = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
        print(
            f"runbooks relay: invalid or missing settings {missing}: pass --token or set "
            "RUNBOOKS_RELAY_TOKEN (and PREFECT_API_URL).",
            file=sys.stderr,
        )
        return 2
    logging.getLogger("alicloud_runbooks").setLevel(logging.INFO)
    if not settings.allowed_account_ids:
        logging.getLogger("alicloud_runbooks.relay").warning(
            "no account allow-list: any event that carries the token is accepted, whatever "
            "account it names. Set RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS=<your Alibaba Cloud "
            "account id> (`aliyun sts GetCallerIdentity` shows it; comma-separated for several)"
        )
    from local_stack.servers import PortTaken, bind

    try:
        sock = bind(args.host, args.port, "--port")
    except PortTaken as exc:
        print(f"runbooks relay: {exc}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    print(
        f"relay listening on http://{args.host}:{port} -> {settings.prefect_api_url}",
        flush=True,
    )
    # No access log: EventBridge targets carry the token in the query string.
    config = uvicorn.Config(
        create_app(settings), host=args.host, port=port, access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _target_url(value: str) -> str:
    from alicloud_runbooks.subscribe import relay_target_url

    try:
        return relay_target_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _account_id(value: str) -> str:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"an Alibaba Cloud account id is all digits, not {value!r} "
            "(`aliyun sts GetCallerIdentity` shows yours)"
        )
    return value


def _instance_states(value: str) -> tuple[str, ...] | None:
    from alicloud_runbooks.instance_states import parse_instance_states

    try:
        return parse_instance_states(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _subscribe(args: argparse.Namespace) -> int:
    from alicloud_runbooks.clients import Endpoint, eventbridge_client
    from alicloud_runbooks.subscribe import allow_list_line, subscribe

    token = args.token or os.environ.get("RUNBOOKS_RELAY_TOKEN")
    if not token:
        print("runbooks subscribe: pass --token or set RUNBOOKS_RELAY_TOKEN", file=sys.stderr)
        return 2
    client = None
    if not args.dry_run:
        key_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
        secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        if not key_id or not secret:
            print(
                "runbooks subscribe: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET (for alisim: see `runbooks sim`)",
                file=sys.stderr,
            )
            return 2
        client = eventbridge_client(
            access_key_id=key_id,
            access_key_secret=secret,
            region=args.region,
            security_token=os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN"),
            endpoint=Endpoint(openapi=args.endpoint, protocol=args.protocol),
        )
    # The documented form names the account: acs:mns:<region>:<account-id>:/queues/<name>.
    account = args.account_id or ""
    dead_letter = (
        args.dead_letter_arn or f"acs:mns:{args.region}:{account}:/queues/runbooks-relay-dlq"
    )
    from alibabacloud_tea_openapi.exceptions import AlibabaCloudException

    try:
        for line in subscribe(
            client,
            target_url=args.target_url,
            token=token,
            dead_letter_arn=dead_letter,
            bus=args.bus,
            dry_run=args.dry_run,
            instance_states=args.instance_states,
        ):
            print(line)
    except (AlibabaCloudException, ValueError) as exc:
        print(
            f"runbooks subscribe: {getattr(exc, 'code', '') or ''} "
            f"{getattr(exc, 'message', '') or exc}",
            file=sys.stderr,
        )
        return 1
    print(allow_list_line(args.account_id))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from alicloud_runbooks.blocks import AlibabaCloudCredentials
    from local_stack.doctor import (
        DEFAULT_IMAGE,
        DEFAULT_INSTANCE_TYPE,
        DoctorConfig,
        run_doctor,
    )

    token = args.token or os.environ.get("RUNBOOKS_RELAY_TOKEN")
    if not token:
        print("runbooks doctor: pass --token or set RUNBOOKS_RELAY_TOKEN", file=sys.stderr)
        return 2
    prefect_api_url = args.prefect_api_url
    prefect_api_key = None
    if not prefect_api_url:
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        prefect_api_url = api.url
        prefect_api_key = api.key.get_secret_value() if api.key else None
    if not prefect_api_url:
        print(
            "runbooks doctor: set PREFECT_API_URL (or pass --prefect-api-url): the Prefect "
            "API the relay writes to",
            file=sys.stderr,
        )
        return 2
    key_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID") or None
    secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET") or None
    security_token = os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None
    try:
        credentials = AlibabaCloudCredentials(
            access_key_id=key_id,
            access_key_secret=SecretStr(secret) if secret else None,
            security_token=SecretStr(security_token) if security_token else None,
            region_id=args.region,
            openapi_endpoint=args.endpoint,
            oss_endpoint=args.endpoint,
            protocol=args.protocol,
        )
    except ValueError as exc:
        print(f"runbooks doctor: {exc}", file=sys.stderr)
        return 2
    config = DoctorConfig(
        relay_url=args.relay_url,
        token=SecretStr(token),
        credentials=credentials,
        prefect_api_url=prefect_api_url,
        prefect_api_key=SecretStr(prefect_api_key) if prefect_api_key else None,
        bus=args.bus,
        dead_letter_arn=args.dead_letter_arn,
        output_bucket=args.output_bucket,
        account_id=args.account_id,
        image_id=args.image_id or DEFAULT_IMAGE,
        instance_type=args.instance_type or DEFAULT_INSTANCE_TYPE,
        vswitch_id=args.vswitch_id,
        security_group_id=args.security_group_id,
        push_timeout=args.push_timeout,
    )
    return run_doctor(config)


def build_parser() -> argparse.ArgumentParser:
    from alicloud_runbooks.instance_states import FORWARDED_INSTANCE_STATES

    parser = argparse.ArgumentParser(prog="runbooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="run alisim, the local Alibaba Cloud, in the foreground")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=9800, help="0 picks a free port (printed)")
    sim.add_argument("--region", default=None, help="region served (default cn-hangzhou)")
    sim.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply every simulated delay (0.1 boots ten times faster)",
    )
    sim.add_argument("--zero-boot", action="store_true", help="instances boot at once")
    sim.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback: mints a fresh key pair (printed) that remote "
        "clients and /_alisim/* must use; the published key pair then works from loopback only",
    )
    sim.add_argument("--log-level", default="info")
    sim.set_defaults(func=_sim)

    relay = sub.add_parser("relay", help="serve the relay: Alibaba events in, Prefect events out")
    relay.add_argument("--host", default="127.0.0.1")
    relay.add_argument("--port", type=_port, default=9810, help="0 picks a free port (printed)")
    relay.add_argument(
        "--token", default=None, help="shared secret (default: RUNBOOKS_RELAY_TOKEN)"
    )
    relay.set_defaults(func=_relay)

    subs = sub.add_parser(
        "subscribe",
        help="create or update the EventBridge rules that push runbook events to the relay",
    )
    subs.add_argument(
        "--target-url",
        required=True,
        type=_target_url,
        help="the relay's /eventbridge URL (a trailing slash is removed)",
    )
    subs.add_argument(
        "--account-id",
        type=_account_id,
        default=None,
        help="your Alibaba Cloud account id: prints the relay allow-list to set",
    )
    subs.add_argument("--token", default=None, help="default: RUNBOOKS_RELAY_TOKEN")
    subs.add_argument("--region", default=os.environ.get("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou"))
    subs.add_argument(
        "--endpoint",
        default=None,
        help="OpenAPI host:port (alisim: 127.0.0.1:9800); default: the real cloud",
    )
    subs.add_argument("--protocol", default="https", choices=["http", "https"])
    subs.add_argument("--bus", default="default")
    subs.add_argument(
        "--instance-states",
        type=_instance_states,
        default=",".join(FORWARDED_INSTANCE_STATES),
        help="the Instance:StateChange states pushed to the relay, comma-separated, or 'all' "
        "(default: %(default)s, the states the runbooks and their triggers act on)",
    )
    subs.add_argument(
        "--dead-letter-arn",
        default=None,
        help="the MNS queue for events EventBridge gives up on, acs:mns:<region>:<account-id>:"
        "/queues/<name> (default: the queue runbooks-relay-dlq of --account-id)",
    )
    subs.add_argument("--dry-run", action="store_true", help="print what would be created")
    subs.set_defaults(func=_subscribe)

    # local_stack.doctor imports the SDKs and Prefect (seconds): its defaults are applied in
    # _doctor, so that building the command line stays cheap for every command.
    doctor = sub.add_parser(
        "doctor",
        help="check an account for the runbooks: credentials, region, permissions, the "
        "EventBridge rules, a test push through the relay into Prefect, the dead-letter queue",
    )
    doctor.add_argument(
        "--relay-url",
        required=True,
        type=_target_url,
        help="the relay's /eventbridge URL, as given to runbooks subscribe --target-url",
    )
    doctor.add_argument("--token", default=None, help="default: RUNBOOKS_RELAY_TOKEN")
    doctor.add_argument(
        "--region", default=os.environ.get("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou")
    )
    doctor.add_argument(
        "--endpoint",
        default=None,
        help="OpenAPI and OSS host:port (alisim: 127.0.0.1:9800); default: the real cloud",
    )
    doctor.add_argument("--protocol", default="https", choices=["http", "https"])
    doctor.add_argument("--bus", default="default")
    doctor.add_argument(
        "--dead-letter-arn", default=None, help="the queue the rules must dead-letter to"
    )
    doctor.add_argument(
        "--output-bucket", default=None, help="the runbooks' output_bucket: checks oss:GetObject"
    )
    doctor.add_argument(
        "--prefect-api-url",
        default=None,
        help="the Prefect API the relay writes to (default: PREFECT_API_URL / the profile)",
    )
    doctor.add_argument(
        "--account-id",
        type=_account_id,
        default=None,
        help="for the test push when the credentials fail (else from STS)",
    )
    doctor.add_argument(
        "--image-id",
        default=None,
        help="for the RunInstances DryRun (default: provision-and-run's image)",
    )
    doctor.add_argument("--instance-type", default=None, help="default: ecs.g7.large")
    doctor.add_argument("--vswitch-id", default=None)
    doctor.add_argument("--security-group-id", default=None)
    doctor.add_argument(
        "--push-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the test event in Prefect",
    )
    doctor.set_defaults(func=_doctor)

    demo = sub.add_parser(
        "demo",
        help="start a local stack (Prefect, alisim, relay), run provision-and-run once, "
        "print its figures, stop",
    )
    demo.add_argument("--instances", type=_positive_int, default=3)
    demo.add_argument(
        "--time-scale",
        type=float,
        default=0.1,
        help="alisim's delays, scaled (default 0.1: Linux boots in 2-4 s instead of 20-40 s)",
    )
    demo.set_defaults(func=_demo)

    up = sub.add_parser(
        "up",
        help="start the local stack and serve the runbooks as deployments until Ctrl-C",
    )
    up.add_argument(
        "--time-scale",
        type=float,
        default=0.1,
        help="alisim's delays, scaled (default 0.1; 1 for real boot times)",
    )
    up.add_argument(
        "--backend",
        choices=["sqlite", "scale-out"],
        default="sqlite",
        help="sqlite: one `prefect server start` (default); scale-out: PostgreSQL, Redis, two "
        "Prefect API servers, a services process and two relay replicas (README: Scale out)",
    )
    up.add_argument(
        "--enable-triggers",
        action="store_true",
        help="switch on the event triggers that prefect.yaml leaves disabled",
    )
    from local_stack.home import (
        DEFAULT_HOME,
        DEFAULT_PREFECT_PORT,
        DEFAULT_RELAY_PORT,
        DEFAULT_SIM_PORT,
        HOME_ENV,
        default_home,
    )

    for flag, default, what in (
        ("--prefect-port", DEFAULT_PREFECT_PORT, "Prefect's API and UI"),
        ("--sim-port", DEFAULT_SIM_PORT, "alisim"),
        ("--relay-port", DEFAULT_RELAY_PORT, "the relay"),
    ):
        up.add_argument(
            flag, type=_port, default=default, help=f"{what} (default {default}; 0: a free port)"
        )
    home_help = (
        f"the stack's kept home: Prefect's database, alisim's data, the relay token, "
        f"stack.json (default ${HOME_ENV} or {DEFAULT_HOME})"
    )
    up.add_argument("--home", type=_home, default=default_home(), help=home_help)
    up.add_argument(
        "--fresh",
        action="store_true",
        help="forget what earlier starts kept in the home (runs, blocks, deployments, token)",
    )
    up.set_defaults(func=_up)

    status = sub.add_parser(
        "status",
        help="what `runbooks up` runs where, and whether each piece answers its health check",
    )
    status.add_argument("--home", type=_home, default=default_home(), help=home_help)
    status.set_defaults(func=_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
