"""``kdseg submit``, ``kdseg status``, ``kdseg logs``: the parsers and the commands (stdlib-only at import)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time

from kdseg.cluster.jobs import (
    TERMINAL,
    _job_call,
    _status_name,
    _summary,
    connect,
    exit_status,
    follow,
    normalize_address,
    wait_terminal,
)
from kdseg.cluster.submit import plan_job
from kdseg.errors import KdsegError

# ------------------------------------------------------------------------------------ commands


def cmd_submit(args: argparse.Namespace) -> int:
    address = normalize_address(args.address)
    plan = plan_job(
        args.space,
        name=args.name,
        out=args.out,
        overrides=args.overrides,
        working_dir=args.working_dir,
        excludes=args.exclude,
        env=args.env,
        verbose=args.verbose,
        submission_id=args.job_id,
    )
    err = sys.stderr
    size = f", {len(plan.files)} files, {plan.upload_bytes / 1024:.0f} KiB" if plan.files is not None else ""
    print(f"kdseg submit: shipping {plan.working_dir}{size}", file=err)
    for note in plan.notes:
        print(f"kdseg submit: note: {note}", file=err)
    if args.dry_run:
        print(f"entrypoint: {plan.entrypoint}")
        for f in plan.files or []:
            print(f"  {f}")
        return 0
    if not args.verbose:  # Ray narrates every ignore file it honours; kdseg printed the upload above
        for name in ("ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir"):
            logging.getLogger(name).setLevel(logging.ERROR)
    client = connect(address)
    try:
        job_id = client.submit_job(
            entrypoint=plan.entrypoint,
            runtime_env=plan.runtime_env,
            submission_id=plan.submission_id,
            metadata=plan.metadata,
        )
    except (RuntimeError, ValueError, ConnectionError) as e:
        raise KdsegError(f"{address}: the cluster refused the job: {str(e).strip()[:500]}") from None
    print(f"kdseg submit: job {job_id} submitted to {address}: {plan.entrypoint}", file=err)
    hint = f"--address {shlex.quote(address)}"
    if args.no_wait:
        print(job_id)
        print(
            f"follow it with: kdseg logs {job_id} {hint} --follow   (status: kdseg status {job_id} {hint})",
            file=err,
        )
        return 0
    try:
        follow(client, job_id)
    except KeyboardInterrupt:
        print(
            f"\nkdseg submit: stopped following; job {job_id} keeps running on the cluster "
            f"(kdseg logs {job_id} {hint} --follow; ray job stop {job_id} {hint})",
            file=err,
        )
        return 130
    info = wait_terminal(client, job_id)
    print(_summary(job_id, info, address), file=err)
    return exit_status(info)


def cmd_status(args: argparse.Namespace) -> int:
    address = normalize_address(args.address)
    client = connect(address)
    info = _job_call(client.get_job_info, args.job_id, address)
    if args.wait and _status_name(info.status) not in TERMINAL:
        while _status_name(info.status) not in TERMINAL:
            time.sleep(2)
            info = _job_call(client.get_job_info, args.job_id, address)
    print(_summary(args.job_id, info, address))
    print(f"entrypoint: {info.entrypoint}")
    return exit_status(info)


def cmd_logs(args: argparse.Namespace) -> int:
    address = normalize_address(args.address)
    client = connect(address)
    if not args.follow:
        sys.stdout.write(_job_call(client.get_job_logs, args.job_id, address))
        return 0
    _job_call(client.get_job_info, args.job_id, address)  # unknown ids fail clearly
    try:
        follow(client, args.job_id)
    except KeyboardInterrupt:
        return 130
    info = wait_terminal(client, args.job_id)
    print(_summary(args.job_id, info, address), file=sys.stderr)
    return exit_status(info)


# -------------------------------------------------------------------------------------- parsers


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help="the cluster head's Ray Jobs API, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)",
    )


def add_cluster_parsers(sub) -> None:
    """Register ``submit``, ``status`` and ``logs`` on the ``kdseg`` subparsers object."""
    s = sub.add_parser(
        "submit",
        help="run a sweep on a Ray cluster as a Ray job",
        description="Ship the project and a search space to a Ray cluster and run the sweep there as a "
        "Ray job; streams its logs until it ends (exit 0 when it SUCCEEDED).",
    )
    s.add_argument("space", help="search space YAML (see search_spaces/)")
    _add_address(s)
    s.add_argument("--name", help="sweep name = folder and Optuna study name (default: the space's name)")
    s.add_argument(
        "--out",
        help="root folder of sweeps on the cluster: shared storage every node mounts at the same path "
        "(a relative path is made absolute here; default: the cluster's $KDSEG_RUNS, else ~/kdseg-runs)",
    )
    s.add_argument(
        "--working-dir",
        help="the folder shipped to the cluster (default: the project holding the space file)",
    )
    s.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="another gitignore-style pattern to leave out of the upload (repeatable)",
    )
    s.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="an environment variable for the job (repeatable; NAME alone copies it from here)",
    )
    s.add_argument("--job-id", help="the Ray submission id (default: kdseg-NAME-<random>)")
    s.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    s.add_argument(
        "--dry-run", action="store_true", help="validate and list what would be shipped; submit nothing"
    )
    s.add_argument("--verbose", action="store_true", help="show Ray's own logs in the sweep")
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a space or config key (repeatable), as for kdseg-sweep",
    )
    s.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="the status of a submitted sweep job (exit 0 unless it failed)")
    st.add_argument("job_id", metavar="JOB", help="the job id printed by kdseg submit")
    _add_address(st)
    st.add_argument("--wait", action="store_true", help="wait until the job ends; exit with its outcome")
    st.set_defaults(func=cmd_status)

    lg = sub.add_parser("logs", help="the logs of a submitted sweep job")
    lg.add_argument("job_id", metavar="JOB", help="the job id printed by kdseg submit")
    _add_address(lg)
    lg.add_argument(
        "-f", "--follow", action="store_true", help="stream until the job ends; exit with its outcome"
    )
    lg.set_defaults(func=cmd_logs)
