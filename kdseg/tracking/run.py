"""W&B tracking: one W&B run per training run or sweep trial, and never in the way of training.

:class:`WandbRun` opens a run (``wandb.init``) for one :func:`kdseg.train.train_kd` call, logs every
epoch's metrics (step = epoch), the per-class IoU, the prediction and layer-wise images of
:class:`kdseg.visualize.EpochImages` and a summary (``val_miou``, ``student_params``,
``iou_per_mparam``, ``teacher_val_miou``, ``status``), and finishes the run however training ends.
W&B's own system metrics (CPU, memory, GPU) stay on.

The mode comes from ``tracking.wandb.mode`` (see :func:`resolve_mode`):

- ``disabled`` (or ``WANDB_MODE=disabled`` / ``WANDB_DISABLED=true``): nothing is written.
- an explicit ``WANDB_MODE`` (``offline``/``dryrun``, ``online``/``run``) is respected.
- ``auto``: ``online`` when a W&B API key is configured (``WANDB_API_KEY``, a ``~/.netrc`` entry for
  the W&B host, or ``wandb login``), otherwise ``offline``.
- ``online`` without an API key, or with the server unreachable (a 3 s TCP probe, remembered for
  the whole sweep), or when ``wandb.init`` fails: ``offline``, with the reason logged.

Offline runs are stored in the run folder (``RUN/wandb/offline-run-*``; for a sweep trial that is
``SWEEP/tune/<trial_id>/run/``, inside the sweep folder) and uploaded later with the command
:func:`sync_command` prints. Every W&B call is guarded: a W&B failure logs one warning and turns
tracking off for that run; training goes on. Timeouts are short (``init_timeout``, and for online
runs ``finish_timeout`` and per-request timeouts), so W&B never stalls a sweep.

The API key is only ever looked up (to choose the mode), never printed, logged or written.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
_ENV_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}
DEFAULT_BASE_URL = "https://api.wandb.ai"
UNREACHABLE_MARKER = ".wandb_unreachable"  # in a sweep folder: skip the probe for this sweep
INIT_TIMEOUT_S = 30.0
ONLINE_FINISH_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 3.0
SUMMARY_KEYS = ("val_miou", "student_params", "iou_per_mparam", "teacher_val_miou", "teacher_params", "epoch")


# ------------------------------------------------------------------------------------------ mode


def _base_url(env: Mapping[str, str]) -> str:
    return env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def api_key_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether a W&B API key is configured; the key itself is never returned or read further.

    Looks where ``wandb login`` and W&B's docs put one: ``WANDB_API_KEY``, the netrc file (``NETRC``,
    ``~/.netrc``, ``~/_netrc``) entry for the W&B host, and an ``api_key`` in W&B's settings files
    (``WANDB_CONFIG_DIR``/settings, ``./wandb/settings``). No network, no prompt.
    """
    import configparser
    import netrc

    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(_base_url(env)).hostname or "api.wandb.ai"
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    netrcs = [Path(env["NETRC"]).expanduser()] if env.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in netrcs:
        try:
            if path.is_file():
                auth = netrc.netrc(str(path)).authenticators(host)
                if auth and auth[2]:
                    return True
        except (OSError, netrc.NetrcParseError):
            continue
    config_dir = Path(env.get("WANDB_CONFIG_DIR") or home / ".config" / "wandb")
    for path in (config_dir / "settings", Path("wandb") / "settings"):
        try:
            parser = configparser.ConfigParser()
            if path.is_file() and parser.read(path) and parser.get("default", "api_key", fallback=""):
                return True
        except (OSError, configparser.Error):
            continue
    return False


def resolve_mode(config_mode: str = "auto", env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(mode, reason)``: the W&B mode a run uses, ``online``, ``offline`` or ``disabled``.

    ``tracking.wandb.mode: disabled`` always wins; then ``WANDB_DISABLED``/``WANDB_MODE`` from the
    environment; then the config. ``online`` (explicit or ``auto``) needs an API key, else offline.
    """
    env = os.environ if env is None else env
    if config_mode == "disabled":
        return "disabled", "tracking.wandb.mode is disabled"
    if str(env.get("WANDB_DISABLED", "")).lower() in ("1", "true", "yes"):
        return "disabled", "WANDB_DISABLED is set"
    env_mode = str(env.get("WANDB_MODE", "")).strip().lower()
    wanted, why = config_mode, f"tracking.wandb.mode is {config_mode}"
    if env_mode in _ENV_MODES:
        wanted, why = _ENV_MODES[env_mode], f"WANDB_MODE={env_mode}"
    if wanted in ("disabled", "offline"):
        return wanted, why
    if not api_key_configured(env):
        return "offline", "no W&B API key is configured"
    return "online", "a W&B API key is configured" if wanted == "auto" else why


def server_reachable(base_url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connect to the W&B server (no request, no credentials) within ``timeout`` seconds."""
    url = urlparse(base_url or _base_url(os.environ))
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _remember_unreachable(state_dir: Path | None, why: str) -> None:
    if state_dir is None:
        return
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / UNREACHABLE_MARKER).write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {why}\n")
    except OSError:
        pass


def _online_or_offline(state_dir: Path | None) -> tuple[str, str]:
    """Online mode was asked for: probe once (per sweep, via a marker file) and fall back to offline."""
    if state_dir is not None and (state_dir / UNREACHABLE_MARKER).exists():
        return "offline", "W&B was unreachable earlier in this sweep"
    if server_reachable():
        return "online", ""
    why = f"the W&B server ({_base_url(os.environ)}) is unreachable"
    _remember_unreachable(state_dir, why)
    return "offline", why


# ---------------------------------------------------------------------------------- speed, memory


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB since start or the last :func:`reset_peak_rss`."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count from the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class HardwareMetrics:
    """Epoch hook: ``peak_rss_mb``, the trial process's peak resident memory during the epoch (for the
    whole process so far where the peak cannot be reset), next to train_kd's ``images_per_s`` and, on
    CUDA, ``peak_memory_mb`` (peak GPU memory allocated in the epoch)."""

    def __init__(self) -> None:
        reset_peak_rss()  # a reused Ray worker must not report the previous trial's peak

    def __call__(self, ctx) -> None:
        rss = peak_rss_mb()
        if rss is not None:
            ctx.metrics["peak_rss_mb"] = round(rss, 1)
        reset_peak_rss()


def hardware_info(device: Any = None) -> dict[str, Any]:
    """Where a run trains (logged to the W&B config): device, CPU count, torch threads, GPU name."""
    import platform

    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if device is not None:
        info["device"] = str(device)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def epoch_hooks(cfg, sink=None) -> list:
    """The epoch hooks every kdseg run gets: hardware metrics, and images unless ``log_images_every`` is 0."""
    from kdseg.tracking.images import EpochImages

    hooks: list = [HardwareMetrics()]
    every = cfg.tracking.wandb.log_images_every
    if every > 0:
        hooks.append(EpochImages(every, sink=sink))
    return hooks


# ------------------------------------------------------------------------------------------ runs


def search_column(key: str) -> str:
    """Name of a searched key in the W&B config's ``search`` section (``distill.alpha`` -> ``distill_alpha``)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", key)


def run_id_for(group: str, name: str) -> str:
    """A W&B run id (unique in a project) for trial ``name`` of sweep ``group``."""
    rid = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{group}-{name}").strip("-")
    return rid[-64:]


def _number(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)) and (not isinstance(v, float) or math.isfinite(v)):
        return v
    return None


def _finish_status(exc_type) -> str:
    from kdseg.train import Diverged

    if exc_type is None:
        return "completed"
    if issubclass(exc_type, Diverged):
        return "diverged"
    if issubclass(exc_type, SystemExit):  # Ray Tune stops a trial (ASHA) by exiting its thread
        return "stopped"
    if issubclass(exc_type, KeyboardInterrupt):
        return "interrupted"
    return "error"


class WandbRun:
    """The W&B run of one ``train_kd`` call (a ``kdseg train`` run or one sweep trial).

    Use as a context manager around ``train_kd``: pass :attr:`hooks` as its ``hooks`` and
    :meth:`wrap` the report function. On exit the run is finished with the status the exit implies
    (``completed``; ``stopped`` for Ray Tune's stop; ``diverged``; ``error``), unless :meth:`finish`
    was called already. Every method is safe to call when tracking is disabled or W&B failed.
    """

    def __init__(
        self,
        cfg,
        run_dir: str | Path,
        *,
        group: str | None = None,
        name: str | None = None,
        run_id: str | None = None,
        job_type: str = "train",
        extra_config: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        tags: Sequence[str] = (),
        state_dir: str | Path | None = None,
        mode: str | None = None,
        device: Any = None,
        wandb_dir: str | Path | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.wandb_dir = Path(wandb_dir) if wandb_dir is not None else self.run_dir
        self.group, self.name, self.run_id, self.job_type = group, name, run_id, job_type
        self.extra_config = dict(extra_config or {})
        self.class_names = list(class_names or [])
        self.tags = list(tags)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.device = device
        self.mode, self.reason = (mode, "requested") if mode else resolve_mode(cfg.tracking.wandb.mode)
        self.run = None
        self.init_seconds: float | None = None
        self.last_epoch = 0
        self.status: str | None = None
        self._pending_images: dict[int, dict[str, Path]] = {}
        self._finished = False
        self.hooks = epoch_hooks(cfg, sink=self.stage_images)

    # -------------------------------------------------------------------------------- lifecycle

    @property
    def active(self) -> bool:
        return self.run is not None

    def open(self) -> WandbRun:
        """Start the W&B run (a no-op when disabled); falls back to offline, then to no tracking."""
        if self.mode == "disabled" or self.run is not None:
            return self
        if self.mode == "online":
            mode, why = _online_or_offline(self.state_dir)
            if mode != "online":
                self.mode, self.reason = mode, why
                log.warning("kdseg: W&B offline: %s", why)
        started = time.perf_counter()
        try:
            self.run = self._init(self.mode)
        except Exception as e:
            if self.mode == "online":
                log.warning("kdseg: W&B online init failed (%s); logging offline", _short(e))
                self.mode, self.reason = "offline", f"online init failed: {_short(e)}"
                _remember_unreachable(self.state_dir, self.reason)
                try:
                    self.run = self._init("offline")
                except Exception as e2:
                    self._give_up(e2)
            else:
                self._give_up(e)
        self.init_seconds = time.perf_counter() - started
        return self

    def _init(self, mode: str):
        import wandb

        from kdseg.config import config_to_dict

        self.wandb_dir.mkdir(parents=True, exist_ok=True)
        w = self.cfg.tracking.wandb
        settings: dict[str, Any] = dict(
            init_timeout=INIT_TIMEOUT_S,
            silent=True,
            console="off",  # training output stays where it is; no fd redirection in Ray workers
            x_stats_sampling_interval=5.0,  # system metrics on, sampled often enough for short trials
            # wandb-core buffers the .wandb file (15 s by default): a trial process that Ray ends
            # abruptly would lose everything logged since; flush every 2 s instead
            x_transaction_log_flush_interval=2.0,
        )
        if mode == "online":
            settings.update(
                finish_timeout=ONLINE_FINISH_TIMEOUT_S,
                x_graphql_timeout_seconds=10.0,
                x_graphql_retry_max=3,
                x_file_stream_timeout_seconds=10.0,
                x_file_stream_retry_max=3,
                x_file_transfer_timeout_seconds=30.0,
                x_file_transfer_retry_max=3,
            )
        config = config_to_dict(self.cfg)
        config.update(self.extra_config)
        config["hardware"] = hardware_info(self.device)
        kwargs: dict[str, Any] = dict(
            dir=str(self.wandb_dir),
            project=w.project,
            entity=w.entity,
            mode=mode,
            group=self.group,
            name=self.name,
            job_type=self.job_type,
            config=config,
            tags=self.tags or None,
            reinit="finish_previous",
            settings=wandb.Settings(**settings),
        )
        if self.run_id:
            kwargs.update(id=self.run_id, resume="allow")
        return wandb.init(**kwargs)

    def _give_up(self, e: BaseException) -> None:
        log.warning("kdseg: W&B tracking off for %s: %s", self.run_dir, _short(e))
        self.mode, self.reason, self.run = "disabled", f"W&B failed: {_short(e)}", None

    def __enter__(self) -> WandbRun:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        status = _finish_status(exc_type)
        if status == "stopped" and self.last_epoch >= self.cfg.train.epochs:
            status = "completed"  # Tune also stops a trial that reached max_t
        self.finish(self.status or status, error=None if exc is None else _short(exc))

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        """Write the final summary and finish the run (idempotent)."""
        if self._finished:
            return
        self._finished = True
        self.status = status
        if self.run is None:
            return
        try:
            self.run.summary["status"] = status
            if error:
                self.run.summary["error"] = error[:500]
            self.run.finish(exit_code=0 if status in ("completed", "stopped") else 1)
        except Exception as e:
            log.warning("kdseg: W&B finish failed: %s", _short(e))
        finally:
            self.run = None

    # ---------------------------------------------------------------------------------- logging

    def stage_images(self, epoch: int, paths: Mapping[str, Path]) -> None:
        """Image sink of :class:`kdseg.visualize.EpochImages`: logged with that epoch's metrics."""
        self._pending_images[epoch] = dict(paths)

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Log one epoch's metrics (step = epoch), its per-class IoU and its images; update the summary."""
        epoch = int(metrics.get("epoch") or self.last_epoch + 1)
        self.last_epoch = max(self.last_epoch, epoch)
        images = self._pending_images.pop(epoch, {})
        if self.run is None:
            return
        try:
            import wandb

            row: dict[str, Any] = {}
            for k, v in metrics.items():
                n = _number(v)
                if n is not None:
                    row[k] = n
                elif isinstance(v, (list, tuple)) and k.endswith("per_class_iou"):
                    who = k.removesuffix("_per_class_iou")
                    for i, x in enumerate(v):
                        if _number(x) is not None:
                            name = self.class_names[i] if i < len(self.class_names) else f"class_{i}"
                            row[f"{who}_iou/{name}"] = x
            for kind, path in images.items():
                row[f"images/{kind}"] = wandb.Image(str(path), caption=f"epoch {epoch}")
            self.run.log(row, step=epoch)
            summary = {k: row[k] for k in SUMMARY_KEYS if k in row}
            best = self.run.summary.get("best_val_miou")
            if "val_miou" in row and (best is None or row["val_miou"] > best):
                summary["best_val_miou"] = row["val_miou"]
            self.run.summary.update(summary)
        except Exception as e:
            log.warning("kdseg: W&B logging failed, tracking off for this run: %s", _short(e))
            try:
                self.run.finish(exit_code=1)
            except Exception:
                pass
            self.run, self.mode = None, "disabled"

    def wrap(self, report=None):
        """A ``train_kd`` report function that logs to W&B, then calls ``report`` (if any)."""

        def tracked_report(metrics: dict[str, Any], ckpt_dir) -> None:
            self.log_epoch(metrics)
            if report is not None:
                report(metrics, ckpt_dir)

        return tracked_report

    # ------------------------------------------------------------------------------------ where

    @property
    def offline_dirs(self) -> list[Path]:
        return offline_runs(self.wandb_dir)

    def describe(self) -> str:
        """One line for the user: where the run went and how to upload it."""
        if self.mode == "disabled":
            return f"W&B: disabled ({self.reason})"
        if self.mode == "offline":
            cmd = sync_command(self.wandb_dir)
            return (
                f"W&B: offline ({self.reason}); upload with: {cmd}"
                if cmd
                else f"W&B: offline ({self.reason})"
            )
        return f"W&B: online, project {self.cfg.tracking.wandb.project}"


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


# ------------------------------------------------------------------------------ offline run files


def offline_runs(folder: str | Path) -> list[Path]:
    """Every ``wandb/offline-run-*`` folder under ``folder`` (a run folder or a whole sweep)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("offline-run-*") if p.is_dir() and p.parent.name == "wandb")


def online_runs(folder: str | Path) -> list[Path]:
    """Every ``wandb/run-*`` folder (runs logged online) under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("run-*") if p.is_dir() and p.parent.name == "wandb")


def sync_command(folder: str | Path) -> str | None:
    """The ``wandb sync`` command that uploads the offline runs under ``folder`` (None when there are none)."""
    runs = offline_runs(folder)
    if not runs:
        return None
    folder = Path(folder).resolve()
    rel = sorted({p.resolve().parent.relative_to(folder).parts for p in runs})  # the wandb/ folders
    depth = {len(r) for r in rel}
    differing = {i for r in rel for i in range(len(r)) if r[i] != rel[0][i]} if len(depth) == 1 else None
    if differing is not None and len(differing) <= 1:  # e.g. tune/*/wandb: one glob covers them all
        parts = ["*" if i in differing else p for i, p in enumerate(rel[0])]
        fixed = [shlex.quote(p) if p != "*" else p for p in parts]
        return f"wandb sync {shlex.quote(str(folder))}/{'/'.join(fixed) + '/' if fixed else ''}offline-run-*"
    return "wandb sync " + " ".join(shlex.quote(str(p)) for p in runs)


@dataclass
class OfflineRun:
    """What an offline run's ``.wandb`` file holds (read back without W&B's server)."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    stats: list[dict[str, Any]] = field(default_factory=list)
    group: str | None = None
    name: str | None = None
    run_id: str | None = None
    project: str | None = None
    exited: bool = False
    exit_code: int | None = None


def _records(data: bytes):
    """Payloads of W&B's record log (LevelDB-log framing: 32 KiB blocks, 7-byte headers)."""
    block, header = 32768, 7
    if len(data) < header or data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log")
    off, buf = header, b""
    while off + header <= len(data):
        left = block - off % block
        if left < header:
            off += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[off : off + header])
        if length == 0 and kind == 0:
            off += left
            continue
        payload = data[off + header : off + header + length]
        off += header + length
        if kind == 1:
            yield payload
        elif kind == 2:
            buf = payload
        elif kind == 3:
            buf += payload
        elif kind == 4:
            yield buf + payload
            buf = b""


def _item_key(item) -> str:
    return "/".join(item.nested_key) if len(item.nested_key) else item.key


def _set_nested(target: dict, item, value) -> None:
    keys = list(item.nested_key) if len(item.nested_key) else [item.key]
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = value


def read_offline_run(path: str | Path) -> OfflineRun:
    """Config, history, summary and system-metric samples of an offline run folder or ``.wandb`` file."""
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{path}: no run-*.wandb file")
    out = OfflineRun(path=path)
    for f in files:
        for payload in _records(f.read_bytes()):
            rec = pb.Record()
            rec.ParseFromString(payload)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                r = rec.run
                out.run_id, out.project = r.run_id, r.project
                out.group, out.name = r.run_group or None, r.display_name or None
                for item in r.config.update:
                    value = json.loads(item.value_json)
                    if isinstance(value, dict) and set(value) == {"value"}:
                        value = value["value"]
                    out.config[_item_key(item)] = value
            elif kind == "config":
                for item in rec.config.update:
                    value = json.loads(item.value_json)
                    if isinstance(value, dict) and set(value) == {"value"}:
                        value = value["value"]
                    out.config[_item_key(item)] = value
            elif kind == "history":
                row: dict[str, Any] = {}
                for item in rec.history.item:
                    row[_item_key(item)] = json.loads(item.value_json)
                out.history.append(row)
            elif kind == "summary":
                for item in rec.summary.update:
                    _set_nested(out.summary, item, json.loads(item.value_json))
            elif kind == "stats":
                out.stats.append({item.key: json.loads(item.value_json) for item in rec.stats.item})
            elif kind == "exit":
                out.exited, out.exit_code = True, rec.exit.exit_code
    return out


# ------------------------------------------------------------------------------------ sweep side


def finish_sweep(plan, result) -> list[str]:
    """Lines to print after a sweep: where its W&B runs are, how to upload them, how to report.

    ``plan`` may be None (``kdseg resume`` has no plan); only ``result.sweep_dir`` is needed.
    """
    sweep_dir = Path(getattr(result, "sweep_dir", result)).resolve()
    lines: list[str] = []
    offline = offline_runs(sweep_dir)
    online = online_runs(sweep_dir)
    if offline:
        ids = {p.name.rsplit("-", 1)[-1] for p in offline}
        lines.append(f"W&B: {len(ids)} offline run(s) in the trial folders; upload them with:")
        lines.append(f"  {sync_command(sweep_dir)}")
    if online:
        project = None
        try:
            from kdseg.sweep.space import load_resolved

            spec = plan.spec if plan is not None else load_resolved(sweep_dir)
            w = spec.base_config.tracking.wandb
            project = f"{w.entity}/{w.project}" if w.entity else w.project
        except Exception:
            pass
        where = f" in project {project}" if project else ""
        lines.append(f"W&B: {len(online)} online run(s){where}, group {sweep_dir.name}")
    lines.append(f"report: kdseg report {shlex.quote(str(sweep_dir))}")
    return lines


__all__ = [
    "MODES",
    "OfflineRun",
    "WandbRun",
    "api_key_configured",
    "epoch_hooks",
    "finish_sweep",
    "HardwareMetrics",
    "hardware_info",
    "offline_runs",
    "online_runs",
    "peak_rss_mb",
    "read_offline_run",
    "reset_peak_rss",
    "resolve_mode",
    "run_id_for",
    "search_column",
    "server_reachable",
    "sync_command",
]
