"""Reading a finished sweep folder for the report: trials, their metrics and configs, searched values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdseg.errors import KdsegError
from kdseg.layout import (
    CONFIG_FILE,
    LEADERBOARD,
    PARAMS_FILE,
    SPEC_FILE,
    read_metrics,
    trial_run_dir,
)
from kdseg.sweep.ranking import as_number

# --------------------------------------------------------------------------------------- loading


@dataclass
class Trial:
    """One trial of a sweep: its leaderboard row and what its run folder holds."""

    row: dict[str, Any]
    run_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # Ray Tune's params.json: what was searched

    @property
    def trial_dir(self) -> Path:
        return self.run_dir.parent

    @property
    def trial_id(self) -> str:
        return str(self.row.get("trial_id"))

    @property
    def last(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def is_baseline(self) -> bool:
        return self.row.get("mode") == "none"


@dataclass
class SweepData:
    sweep_dir: Path
    name: str
    spec: Any  # kdseg.space.SweepSpec
    rows: list[dict[str, Any]]
    trials: list[Trial]
    class_names: list[str]
    palette: list[list[int]] | None

    @property
    def best(self) -> Trial | None:
        from kdseg.sweep.ranking import best_row

        row = best_row(self.rows, self.spec.max_t)
        return None if row is None else self.by_id(row["trial_id"])

    @property
    def baseline(self) -> Trial | None:
        """The best no-KD trial (ran to the end first, then by val mIoU)."""
        base = [t for t in self.trials if t.is_baseline and as_number(t.row.get("val_miou")) is not None]
        if not base:
            return None
        max_t = self.spec.max_t
        return max(
            base, key=lambda t: ((as_number(t.row.get("epochs")) or 0) >= max_t, as_number(t.row["val_miou"]))
        )

    @property
    def best_kd(self) -> Trial | None:
        """The best distilled trial in leaderboard order (None when every trial is a baseline)."""
        from kdseg.sweep.ranking import best_row

        row = best_row([r for r in self.rows if r.get("mode") != "none"], self.spec.max_t)
        return None if row is None else self.by_id(row["trial_id"])

    def by_id(self, trial_id: Any) -> Trial | None:
        return next((t for t in self.trials if t.trial_id == str(trial_id)), None)


def load_sweep(sweep_dir: str | Path) -> SweepData:
    """Read a finished sweep folder; a KdsegError says what is missing."""
    from kdseg.errors import ConfigError
    from kdseg.sweep.ranking import read_leaderboard_csv
    from kdseg.sweep.space import load_resolved
    from kdseg.tracking.images import read_classes
    from kdseg.yaml_io import read_yaml

    sweep_dir = Path(sweep_dir).resolve()
    if not sweep_dir.is_dir():
        raise KdsegError(f"{sweep_dir}: no such sweep folder")
    if not (sweep_dir / SPEC_FILE).exists():
        raise KdsegError(f"{sweep_dir}: not a kdseg sweep folder (no {SPEC_FILE})")
    board = sweep_dir / LEADERBOARD
    if not board.exists():
        raise KdsegError(
            f"{sweep_dir}: no {LEADERBOARD} yet (the sweep has not finished); `kdseg resume {sweep_dir}` finishes it"
        )
    spec = load_resolved(sweep_dir / SPEC_FILE)
    rows = read_leaderboard_csv(board)
    trials = []
    for row in rows:
        run_dir = trial_run_dir(sweep_dir, str(row.get("trial_id")))
        cfg: dict[str, Any] = {}
        if (run_dir / CONFIG_FILE).exists():
            try:
                cfg = read_yaml(run_dir / CONFIG_FILE)
            except ConfigError:
                cfg = {}
        params: dict[str, Any] = {}
        try:
            import json

            loaded = json.loads((run_dir.parent / PARAMS_FILE).read_text())
            params = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
        trials.append(Trial(row, run_dir, read_metrics(run_dir), cfg, params))
    classes = next((c for t in trials if (c := read_classes(t.run_dir))), None)
    n_classes = spec.base_config.data.num_classes
    if classes:
        names, palette = list(classes["class_names"]), classes.get("palette")
    else:
        names, palette = _format_classes(spec.base_config.data.format, n_classes)
    name = str(spec.extra.get("sweep_name") or sweep_dir.name)
    return SweepData(sweep_dir, name, spec, rows, trials, names, palette)


def _format_classes(fmt: str, n: int) -> tuple[list[str], list[list[int]] | None]:
    """The registered format's class names and palette (kdseg.data.registry); generic names for a
    format that is not registered (any more)."""
    from kdseg.data.classes import classes_for

    try:
        names, palette = classes_for(fmt, n)
    except KdsegError:
        return [f"class_{i}" for i in range(n)], None
    return names, palette.tolist()


# ------------------------------------------------------------------------------------- searched keys


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _label_text(label: Any) -> str:
    if isinstance(label, (list, tuple)):
        return "+".join(str(x) for x in label)
    return str(label)


def trial_value(domain, key: str, config: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Any:
    """The value a trial took for space entry ``key`` (a choice's label; None when unknown).

    From the trial's Tune parameters when known, else read back from its resolved config.
    """
    from kdseg.overrides import get_dotted

    if params and key in params:
        try:
            decoded = domain.decode(params[key])
            return as_number(decoded) if not domain.categorical else _label_text(domain.encode(decoded))
        except ValueError:
            pass
    if not config:
        return None
    if domain.group:  # the most specific group whose settings the config holds
        matches = [
            (len(values), label)
            for values, label in zip(domain.values, domain.labels, strict=True)
            if all(_same(get_dotted(config, k), v) for k, v in values.items())
        ]
        return _label_text(max(matches, key=lambda m: m[0])[1]) if matches else None
    value = get_dotted(config, key)
    if domain.categorical:
        for v, label in zip(domain.values, domain.labels, strict=True):
            if _same(v, value):
                return _label_text(label)
        return None if value is None else _label_text(value)
    return as_number(value)
