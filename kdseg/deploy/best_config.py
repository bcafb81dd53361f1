"""``kdseg export``: a sweep's winning trial as a complete training config.

The config written is the trial's own resolved config (``tune/<trial_id>/run/config.yaml``, the
exact config its ``train_kd`` ran with, ``train.epochs = max_t``), so ``kdseg train`` on it reproduces
the trial: same data, same seed, same schedule. Keys that do not apply to the trial (an encoder of a
lightweight UNet, the KD settings of a no-KD student, ...) are left out, and named in a comment at the
top, so that the file reads as what was run; ``kdseg train`` fills them with their (unused) defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdseg.config import KDConfig, config_to_dict, load_config
from kdseg.errors import KdsegError
from kdseg.fileio import atomic_write
from kdseg.layout import BEST_CONFIG, CONFIG_FILE, LEADERBOARD, SPEC_FILE, trial_run_dir
from kdseg.models.registry import own_archs


def pick_trial(sweep_dir: Path, rank_by: str | None = None) -> dict[str, Any]:
    """The leaderboard row of the best trial (by the sweep's objective, or by ``rank_by``)."""
    from kdseg.sweep.ranking import best_row, build_leaderboard, read_leaderboard_csv, why_no_winner
    from kdseg.sweep.space import load_resolved

    board_file = sweep_dir / LEADERBOARD
    if not board_file.exists():
        raise KdsegError(f"{sweep_dir}: no {LEADERBOARD} (not a sweep folder, or the sweep has not finished)")
    rows = read_leaderboard_csv(board_file)
    spec = load_resolved(sweep_dir / SPEC_FILE)
    if rank_by == "test_miou":
        raise KdsegError("--rank-by test_miou: test numbers are never used for selection (sweep.final_eval)")
    if rank_by:
        try:
            rows = build_leaderboard(rows, rank_by, spec.max_t, cost=spec.sweep.cost)
        except ValueError as e:
            raise KdsegError(f"--rank-by: {e}") from None
    best = best_row(rows, spec.max_t)
    if best is None:
        raise KdsegError(f"{board_file}: no winner: {why_no_winner(rows, spec.max_t)}")
    return best


def export_config(
    sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None, rank_by: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write the best trial's training config; returns its path and leaderboard row."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise KdsegError(f"{sweep_dir}: no such sweep folder")
    row = pick_trial(sweep_dir, rank_by)
    src = trial_run_dir(sweep_dir, str(row["trial_id"])) / CONFIG_FILE
    if not src.exists():
        raise KdsegError(f"{src}: the trial's config is missing (was the sweep folder moved or pruned?)")
    cfg = load_config(src)
    cfg = cfg.model_copy(update={"name": f"{sweep_dir.name}-{row['trial_id']}"})
    path = write_applicable(cfg, Path(out) if out else sweep_dir / BEST_CONFIG)
    return path, row


_KD_ONLY = (
    "temperature",
    "alpha",
    "sites",
    "feature_loss",
    "feature_weight",
    "alternation",
    "teacher_entropy",
    "logit_loss",
    "kd_ignore_index",
    "dist_beta",
    "dist_gamma",
    "affinity_grid",
    "cwd_temperature",
)


def inapplicable(cfg: KDConfig) -> dict[str, str]:
    """Dotted keys of ``cfg`` that nothing reads in this run, with the reason."""
    out: dict[str, str] = {}
    d = cfg.distill
    roles = ("student",) if d.mode == "none" else ("teacher", "student")
    if d.mode == "none":
        out["teacher"] = "distill.mode none: no teacher"
        for k in (*_KD_ONLY, "alpha_schedule", "alpha_final"):
            out[f"distill.{k}"] = "distill.mode none: the student trains alone"
        out["train.teacher_lr"] = "distill.mode none: no teacher"
    else:
        if d.sites == ["logits"]:
            out["distill.feature_loss"] = out["distill.feature_weight"] = "no feature sites (distill.sites)"
        if d.alpha_schedule == "constant":
            out["distill.alpha_final"] = "distill.alpha_schedule constant"
        features = d.sites != ["logits"]
        if d.logit_loss != "dist" or "logits" not in d.sites:
            out["distill.dist_beta"] = out["distill.dist_gamma"] = "distill.logit_loss is not dist"
        if not ("logits" in d.sites and d.logit_loss == "affinity") and not (
            features and d.feature_loss == "affinity"
        ):
            out["distill.affinity_grid"] = "no affinity loss"
        if not (features and d.feature_loss == "cwd"):
            out["distill.cwd_temperature"] = "distill.feature_loss is not cwd"
        if not cfg.teacher_trains:
            out["train.teacher_lr"] = "the teacher does not train"
    for role in roles:
        m = getattr(cfg, role)
        if m.arch in own_archs():
            out[f"{role}.encoder"] = f"{role}.arch {m.arch} has no smp encoder"
        if m.arch != "lightweight_unet":
            out[f"{role}.width"] = f"{role}.width applies to lightweight_unet only"
    if cfg.data.format != "synthetic":
        out["data.synth"] = "data.format is not synthetic"
    return out


def write_applicable(cfg: KDConfig, path: Path) -> Path:
    """Write ``cfg`` as YAML without the keys :func:`inapplicable` names, listed in a header comment."""
    import yaml

    doc = config_to_dict(cfg)
    left = inapplicable(cfg)
    for key in left:
        section, _, name = key.partition(".")
        if name:
            doc[section].pop(name, None)
        else:
            doc.pop(section, None)
    by_reason: dict[str, list[str]] = {}
    for key, reason in left.items():
        by_reason.setdefault(reason, []).append(key)
    head = "".join(f"#   {', '.join(keys)}: {reason}\n" for reason, keys in by_reason.items())
    head = (
        f"# left out (they do not apply to this run; kdseg train fills in defaults):\n{head}" if head else ""
    )
    with atomic_write(path, "w") as f:
        f.write(head)
        yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=None)
    return Path(path)
