"""The Ray Jobs API side of ``kdseg submit``, ``kdseg status`` and ``kdseg logs``.

:func:`connect` reaches the head's Jobs API (:class:`ray.job_submission.JobSubmissionClient`, served by
the head's dashboard; needs ``ray[default]``), with the cluster's token where it wants one; an
unreachable head is a :class:`~kdseg.errors.KdsegError` (exit 2). :func:`follow` streams a job's logs,
:func:`wait_terminal` waits for its end, :func:`exit_status` maps it to the command's exit status.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

from kdseg.cluster.submit import CLUSTER_OUT
from kdseg.errors import ConfigError, KdsegError

# Ray job statuses, as strings (ray.job_submission.JobStatus values).
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def normalize_address(address: str | None) -> str:
    """``http://HOST:8265`` for the Jobs API; ``HOST:PORT`` gets ``http://``; env vars as Ray's CLI."""
    address = (
        address or os.environ.get("RAY_API_SERVER_ADDRESS") or _http_or_none(os.environ.get("RAY_ADDRESS"))
    )
    if not address:
        raise ConfigError(
            "--address: missing; give the Ray Jobs API of the cluster's head, e.g. "
            "--address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)"
        )
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise ConfigError(
            f"--address {address}: that is a Ray Client address; kdseg submit talks to the Jobs API "
            f"served by the head's dashboard, e.g. http://HEAD:8265"
        )
    if "://" not in address:
        address = "http://" + address
    if not re.match(r"^https?://[^/]+", address):
        raise ConfigError(f"--address {address}: expected http://HOST:PORT (the head's dashboard)")
    return address


def _http_or_none(value: str | None) -> str | None:
    return value if value and value.startswith(("http://", "https://")) else None


def _auth_token() -> str | None:
    """The cluster token as Ray's own clients find it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def connect(address: str | None):
    """A JobSubmissionClient for the head at ``address``; unreachable heads are KdsegErrors (exit 2)."""
    address = normalize_address(address)
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:  # ray without the [default] extra has no job SDK dependencies
        raise KdsegError(
            f"the Ray Jobs client is not installed ({e}); install ray[default] (pip install 'ray[default]')"
        ) from None
    from ray.exceptions import AuthenticationError

    token = _auth_token()
    send_token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token" or bool(
        os.environ.get("RAY_AUTH_TOKEN")
    )
    attempts = [True] if send_token and token else [False, True] if token else [False]
    for with_token in attempts:
        headers = {"Authorization": f"Bearer {token}"} if with_token else None
        try:
            return JobSubmissionClient(address, headers=headers)
        except AuthenticationError as e:
            if not with_token and token:
                continue  # the head wants its token: send ours
            first = str(e).strip().splitlines()[0]
            raise KdsegError(
                f"--address {address}: {first}; put the cluster's token in RAY_AUTH_TOKEN or a file "
                f"named by RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
            ) from None
        except (OSError, RuntimeError, ValueError) as e:  # requests' errors are OSErrors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KdsegError(
                f"--address {address}: cannot reach the Ray Jobs API ({first[:300]}); is a Ray head running "
                f"there with its dashboard (ray start --head --dashboard-host 0.0.0.0, port 8265 by default)?"
            ) from None
    raise AssertionError("unreachable")


def _job_call(fn, job_id: str, address: str):
    try:
        return fn(job_id)
    except RuntimeError as e:
        text = str(e)
        if "404" in text or "does not exist" in text:
            raise KdsegError(f"no job {job_id!r} on {address} (use the id kdseg submit printed)") from None
        raise KdsegError(f"{address}: job {job_id}: {text.strip().splitlines()[0][:300]}") from None


def _status_name(status) -> str:
    return str(getattr(status, "value", status)).upper()


def exit_status(info) -> int:
    """0 SUCCEEDED; the sweep's own exit status (else 1) FAILED; 1 STOPPED; 0 still PENDING/RUNNING."""
    status = _status_name(info.status)
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED":
        code = getattr(info, "driver_exit_code", None)
        return code if isinstance(code, int) and 0 < code < 256 else 1
    if status == "STOPPED":
        return 1
    return 0


def follow(client, job_id: str, *, out=None) -> None:
    """Stream a job's logs to ``out`` until the job ends."""
    out = out or sys.stdout

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())


def wait_terminal(client, job_id: str, poll: float = 0.5):
    """Job info once the job has ended (a log stream can close before that: a moment, or a dropped link)."""
    while True:
        info = client.get_job_info(job_id)
        if _status_name(info.status) in TERMINAL:
            return info
        time.sleep(poll)
        poll = min(poll * 1.5, 5.0)


def _summary(job_id: str, info, address: str) -> str:
    status = _status_name(info.status)
    meta = info.metadata or {}
    took = ""
    if info.start_time and info.end_time:
        took = f" in {(info.end_time - info.start_time) / 1000:.0f}s"
    text = f"job {job_id}: {status}{took}"
    if info.message and status != "SUCCEEDED":
        text += f" ({info.message.strip().splitlines()[-1][:300]})"
    name, out = meta.get("kdseg_sweep"), meta.get("kdseg_out")
    if name:
        folder = (
            f"{out}/{name}"
            if out and out != CLUSTER_OUT
            else f"$KDSEG_RUNS/{name} (else ~/kdseg-runs/{name})"
        )
        text += f"\nsweep {name}: {folder} on the cluster's storage"
        if status == "SUCCEEDED":
            text += f"\nleaderboard: {folder.split(' ')[0]}/leaderboard.csv"
    return text
