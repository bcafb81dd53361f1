"""W&B run folders on disk, and the reader of an offline run's binary log (``wandb.proto``: private API)."""

from __future__ import annotations

import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
