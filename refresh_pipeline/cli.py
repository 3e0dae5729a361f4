"""`refresh-pipeline`: demo, run, status, report, sweep, validate, check-policy, notify-test, ui and server
commands."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from refresh_pipeline.config import CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE, load_config
from refresh_pipeline.errors import RefreshError

if TYPE_CHECKING:  # imported by the commands that need it: `run` and `status` start faster without
    from refresh_pipeline.validate import Validation


def _cmd_run(args: argparse.Namespace) -> int:
    from refresh_pipeline.execution import run_refresh
    from refresh_pipeline.notify import send_crash, send_outcome, webhook_url

    def run() -> int:
        config = load_config(args.config)
        if config.notify:
            webhook_url(config.notify)  # a missing URL refuses to start: otherwise no one would hear of the run
        try:
            outcome = run_refresh(args.config, in_process=args.in_process)
        except Exception as error:
            _say_problems(send_crash(config, error))
            raise
        code = _report(outcome)
        _say_problems(send_outcome(config, outcome))
        return code

    if not args.then_stop:
        if args.log_group:
            raise RefreshError("--log-group goes with --then-stop (the EC2 worker).")
        return run()
    from refresh_pipeline.launcher.worker import run_then_stop

    return run_then_stop(run, region=_region_if_readable(args.config), log_group=args.log_group)


def _region_if_readable(config_path: str) -> str | None:
    """The AWS region of the config; None when it cannot be read (the worker then stops itself in its own
    region, and run() says what is wrong with the config)."""
    try:
        config = load_config(config_path)
    except RefreshError:
        return None
    return config.aws.region if config.aws else None


def _report(outcome: object) -> int:
    from refresh_pipeline.outcome import RefreshOutcome

    assert isinstance(outcome, RefreshOutcome)
    if outcome.audit_report:
        print(f"audit report: {outcome.audit_report}")
    if outcome.success:
        print(f"refresh succeeded (run {outcome.run_id})")
        return 0
    print(f"refresh FAILED (run {outcome.run_id})", file=sys.stderr)
    for check in outcome.failed_checks:
        print(f"  failed check: {check}", file=sys.stderr)
    for step in outcome.failed_steps:
        error = outcome.step_errors.get(step)
        print(f"  failed step: {step}" + (f": {error}" if error else ""), file=sys.stderr)
    if outcome.skipped_steps:
        print(
            f"  not run because of the above: {', '.join(sorted(set(outcome.skipped_steps)))}",
            file=sys.stderr,
        )
    if outcome.promoted_database:
        print(f"  staging was promoted to {outcome.promoted_database} before that.", file=sys.stderr)
    else:
        print("  staging was not changed.", file=sys.stderr)
    print("  Details: `refresh-pipeline ui` (Runs tab).", file=sys.stderr)
    return 1


def _say_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"refresh-pipeline: could not send the notification: {problem}", file=sys.stderr)


def _cmd_status(args: argparse.Namespace) -> int:
    from refresh_pipeline.status import refresh_status

    status = refresh_status(load_config(args.config))
    if args.json:
        print(json.dumps(status, indent=2))
        return _stale(status, args.max_age_days)
    if status["staging_database"] is None:
        print("nothing promoted yet")
    else:
        print(f"staging -> {status['staging_database']} (promoted {status['promoted_at']})")
        if status["service_file"]:
            print(f"  connect: PGSERVICEFILE={status['service_file']} psql service=staging")
        else:
            print(f'  connect: psql "{status["staging_service"]}"')
    print(f"managed databases: {', '.join(status['managed_databases']) or 'none'}")
    return _stale(status, args.max_age_days)


def _stale(status: dict[str, object], max_age_days: float | None) -> int:
    """1 (and why, on stderr) when staging is older than max_age_days: the weekly refresh has not promoted."""
    from refresh_pipeline.status import staging_age

    if max_age_days is None:
        return 0
    if max_age_days <= 0:
        raise RefreshError(f"--max-age-days must be a positive number of days, got {max_age_days:g}.")
    age = staging_age(status)
    if age is None:
        why = "nothing is promoted" if status["staging_database"] is None else "its age is unknown"
        print(f"refresh-pipeline: staging is not fresh: {why}.", file=sys.stderr)
        return 1
    days = age.total_seconds() / 86400
    if days <= max_age_days:
        return 0
    print(
        f"refresh-pipeline: staging is {days:.1f} days old, more than {max_age_days:g}: no refresh has promoted "
        f"since {status['staging_database']} (see the latest runs in the Dagster UI).",
        file=sys.stderr,
    )
    return 1


def _cmd_report(args: argparse.Namespace) -> int:
    import dagster as dg

    from refresh_pipeline.execution import prepare_dagster_home
    from refresh_pipeline.masking.policy import load_policy
    from refresh_pipeline.reporting import write_audit_report
    from refresh_pipeline.state import StateFile

    config = load_config(args.config)
    restored = StateFile(config.work_dir).require("restored", "restored_instance (run a refresh)")
    prepare_dagster_home(args.config)
    with dg.DagsterInstance.get() as instance:
        markdown, as_json = write_audit_report(
            instance, config, load_policy(config.policy_path), restored.database, restored.snapshot_id
        )
    print(markdown.read_text())
    print(f"written to {markdown} and {as_json}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from refresh_pipeline.platforms.aws import AwsPlatform

    config = load_config(args.config)
    if config.platform != "aws":
        raise RefreshError("sweep is for the aws platform; locally `retired_staging` removes old databases.")
    swept = AwsPlatform(config).sweep_orphans()
    print(f"deleted {len(swept)} orphaned instance(s): {', '.join(swept) or 'none'}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from refresh_pipeline.validate import validate_against_source

    validation = validate_against_source(load_config(args.config), log=lambda message: print(message, file=sys.stderr))
    return _print_validation(validation, "production")


def _cmd_check_policy(args: argparse.Namespace) -> int:
    from refresh_pipeline.validate import check_policy_against

    validation = check_policy_against(args.dsn, Path(args.policy), log=lambda message: print(message, file=sys.stderr))
    return _print_validation(validation, "the database")


def _print_validation(validation: Validation, database: str) -> int:
    for warning in validation.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not validation.problems:
        print(f"the policy covers every column of {database} and every rule applies")
        return 0
    for problem in validation.problems:
        print(problem, file=sys.stderr)
    return 1


def _cmd_notify_test(args: argparse.Namespace) -> int:
    from refresh_pipeline.notify import Notice, deployment_label, send_notice

    config = load_config(args.config)
    if config.notify is None:
        raise RefreshError(f"{args.config} has no notify section: nothing to send to (README, Notifications).")
    label = deployment_label(config)
    notice = Notice(
        f"test notice ({label})", f"refresh_pipeline can reach this channel; notify.when is {config.notify.when}."
    )
    problems = send_notice(config.notify, notice)
    channels = [
        name
        for name, configured in (("SNS topic", config.notify.sns_topic_arn), ("webhook", config.notify.webhook_url_env))
        if configured
    ]
    if not problems:
        print(f"sent a test notice to the {' and the '.join(channels)}")
        return 0
    _say_problems(problems)
    return 1


def _program() -> str:
    """How the user invoked us, so printed follow-up commands work without an activated venv."""
    invoked = Path(sys.argv[0])
    return str(invoked) if invoked.name == "refresh-pipeline" else "refresh-pipeline"


def _ensure_masking_key(variable: str) -> None:
    if not os.environ.get(variable):
        os.environ[variable] = secrets.token_urlsafe(32)
        print(
            f"note: {variable} is not set; using a throwaway random masking key for this run "
            f"(set {variable} to get the same masked values every run)."
        )


def _cmd_demo(args: argparse.Namespace) -> int:
    from refresh_pipeline.demo.setup import prepare_demo
    from refresh_pipeline.execution import run_refresh

    config_path = prepare_demo(Path(args.work_dir), scale=args.scale, port=args.port, reset=args.reset)
    config = load_config(config_path)
    _ensure_masking_key(config.masking_key_env)
    print("running the refresh: snapshot -> restore -> mask -> audit -> promote -> retire")
    code = _report(run_refresh(config_path, in_process=args.in_process))
    if code == 0:
        from refresh_pipeline.status import refresh_status

        status = refresh_status(config)
        print(f"\nstaging is {status['staging_database']}; connect with:")
        print(f"  PGSERVICEFILE={status['service_file']} psql service=staging")
        print(f"demo production (the source) is {config.source_dsn}")
        print(f"open the Dagster UI: {_program()} ui --config {config_path}")
        print(f"stop the demo server: {_program()} server stop --config {config_path}")
    return code


def _cmd_ui(args: argparse.Namespace) -> int:
    from refresh_pipeline.execution import prepare_dagster_home

    home = prepare_dagster_home(args.config)
    print(f"Dagster UI on http://127.0.0.1:{args.port} (DAGSTER_HOME={home})")
    dagster = Path(sys.executable).with_name("dagster")
    command = [
        str(dagster),
        "dev",
        "-m",
        "refresh_pipeline.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(args.port),
    ]
    os.execv(command[0], command)
    return 0  # not reached


def _cmd_server(args: argparse.Namespace) -> int:
    from refresh_pipeline.platforms.local import LocalPlatform

    platform = LocalPlatform(load_config(args.config))
    if platform.server is None:
        raise RefreshError(
            "this config uses an existing server (local.server_dsn); there is no embedded server to manage."
        )
    if args.action == "start":
        platform.server.ensure_running()
        print(f"PostgreSQL running (data in {platform.server.data_dir}); connect with: psql '{platform.server.dsn()}'")
    else:
        platform.server.stop()
        print("PostgreSQL stopped")
    return 0


def _default_config() -> str:
    return os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refresh-pipeline",
        description="Keep a production-like, PII-free staging PostgreSQL database fresh.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--config",
            default=_default_config(),
            help=f"config file (default: ${CONFIG_ENV_VAR} or ./{DEFAULT_CONFIG_FILE})",
        )
        return sub

    run = with_config(commands.add_parser("run", help="run the whole refresh once; exit 1 if anything fails"))
    run.add_argument("--in-process", action="store_true", help="run all steps in this process (no parallelism)")
    run.add_argument(
        "--then-stop", action="store_true", help="EC2 worker: stop this instance afterwards, also after a failure"
    )
    run.add_argument(
        "--log-group",
        metavar="NAME",
        help="with --then-stop: send the run's output to this CloudWatch Logs group before stopping",
    )
    run.set_defaults(handler=_cmd_run)

    status = with_config(commands.add_parser("status", help="what staging points at now"))
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--max-age-days",
        type=float,
        metavar="DAYS",
        help="exit 1 when staging was promoted more than DAYS ago (or never): for monitoring",
    )
    status.set_defaults(handler=_cmd_status)

    report = with_config(commands.add_parser("report", help="write and print the audit report of the latest restore"))
    report.set_defaults(handler=_cmd_report)

    sweep = with_config(
        commands.add_parser("sweep", help="aws: delete our unpromoted instances older than orphan_days")
    )
    sweep.set_defaults(handler=_cmd_sweep)

    validate = with_config(commands.add_parser("validate", help="check the policy against production (read-only)"))
    validate.set_defaults(handler=_cmd_validate)

    check_policy = commands.add_parser(
        "check-policy",
        help="check a policy against any database's schema (read-only; for CI after migrations): exit 1 if not covered",
    )
    check_policy.add_argument("--policy", required=True, help="the masking policy file")
    check_policy.add_argument("--dsn", required=True, help="the database to read the schema of, e.g. a CI database")
    check_policy.set_defaults(handler=_cmd_check_policy)

    notify_test = with_config(
        commands.add_parser("notify-test", help="send a test notice to the channels of the config's notify section")
    )
    notify_test.set_defaults(handler=_cmd_notify_test)

    demo = commands.add_parser("demo", help="local server + demo production database + one full refresh")
    demo.add_argument("--work-dir", default=".work", help="where the demo keeps its server, snapshots and state")
    demo.add_argument("--scale", type=float, default=0.01, help="demo size; 1.0 = 200k customers (default 0.01)")
    demo.add_argument("--port", type=int, default=54329, help="port of the demo PostgreSQL server")
    demo.add_argument("--reset", action="store_true", help="reload demo production from scratch")
    demo.add_argument("--in-process", action="store_true", help="run all steps in this process")
    demo.set_defaults(handler=_cmd_demo)

    ui = with_config(commands.add_parser("ui", help="open the Dagster UI on this config"))
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=_cmd_ui)

    server = with_config(commands.add_parser("server", help="start or stop the embedded PostgreSQL server"))
    server.add_argument("action", choices=["start", "stop"])
    server.set_defaults(handler=_cmd_server)
    return parser


# A reader that stopped reading (`refresh-pipeline status | head -1`) ends us as SIGPIPE ends a shell tool.
_STOPPED_READING = 128 + 13


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except RefreshError as exc:
        print(f"refresh-pipeline: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_unread():
            raise  # another pipe (a socket): an error to report, not a reader gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return _STOPPED_READING


def _stdout_unread() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll reports an error on its write end)."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))


if __name__ == "__main__":
    sys.exit(main())
