"""The same report as a W&B Report (wandb-workspaces), when the sweep's runs are online."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from kdseg.report.load import SweepData

# ---------------------------------------------------------------------------------------- W&B Report


def wandb_report_spec(
    *,
    entity: str,
    project: str,
    group: str,
    searched: Sequence[str],
    metric: str = "val_miou",
    title: str | None = None,
    description: str = "",
):
    """A ``wandb_workspaces`` Report comparing the runs of one sweep (W&B group); no network used.

    ``searched`` are the keys of the search space (``distill.alpha``, ``pair``): each trial logs the
    value it took under ``config.search.<key with dots as _>`` (see :func:`kdseg.tracking.search_column`).
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from kdseg.tracking.run import search_column

    def runset(name: str):
        return wr.Runset(
            entity=entity,
            project=project,
            name=name,
            filters=expr.And(expr.Metric("Group") == group),
            order=[wr.OrderBy(wr.SummaryMetric(metric), ascending=False)],
        )

    columns = [
        wr.ParallelCoordinatesPlotColumn(metric=wr.Config(f"search.{search_column(k)}"), display_name=k)
        for k in searched
    ]
    columns += [
        wr.ParallelCoordinatesPlotColumn(
            metric=wr.SummaryMetric("student_params"), display_name="student params", log=True
        ),
        wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(metric), display_name=metric),
    ]
    blocks = [
        wr.P(
            description
            or f"Sweep {group}: online knowledge distillation trials (kdseg), one W&B run per trial."
        ),
        wr.H2("Accuracy vs. size"),
        wr.PanelGrid(
            runsets=[runset(group)],
            panels=[
                wr.ScatterPlot(
                    title="val mIoU vs. student parameters",
                    x=wr.SummaryMetric("student_params"),
                    y=wr.SummaryMetric(metric),
                    log_x=True,
                    layout=wr.Layout(x=0, y=0, w=12, h=8),
                ),
                wr.ScatterPlot(
                    title="IoU per M params vs. student parameters",
                    x=wr.SummaryMetric("student_params"),
                    y=wr.SummaryMetric("iou_per_mparam"),
                    log_x=True,
                    layout=wr.Layout(x=12, y=0, w=12, h=8),
                ),
                wr.LinePlot(
                    title="student val mIoU per epoch",
                    x="epoch",
                    y=[metric],
                    layout=wr.Layout(x=0, y=8, w=12, h=8),
                ),
                wr.LinePlot(
                    title="teacher val mIoU per epoch",
                    x="epoch",
                    y=["teacher_val_miou"],
                    layout=wr.Layout(x=12, y=8, w=12, h=8),
                ),
            ],
        ),
        wr.H2("Searched hyper-parameters"),
        wr.PanelGrid(
            runsets=[runset(group)],
            panels=[
                wr.ParallelCoordinatesPlot(
                    title="searched keys -> val mIoU", columns=columns, layout=wr.Layout(x=0, y=0, w=24, h=9)
                ),
                wr.ParameterImportancePlot(with_respect_to=metric, layout=wr.Layout(x=0, y=9, w=12, h=9)),
                wr.BarPlot(title="final val mIoU", metrics=[metric], layout=wr.Layout(x=12, y=9, w=12, h=9)),
            ],
        ),
        wr.H2("Runs side by side"),
        wr.PanelGrid(
            runsets=[runset(group)],
            panels=[
                wr.RunComparer(diff_only="split", layout=wr.Layout(x=0, y=0, w=24, h=12)),
                wr.MediaBrowser(
                    title="predictions",
                    media_keys=["images/predictions"],
                    layout=wr.Layout(x=0, y=12, w=12, h=10),
                ),
                wr.MediaBrowser(
                    title="layer by layer",
                    media_keys=["images/layers"],
                    layout=wr.Layout(x=12, y=12, w=12, h=10),
                ),
            ],
        ),
    ]
    return wr.Report(
        entity=entity,
        project=project,
        title=(title or f"kdseg sweep {group}")[:128],
        description=f"Knowledge-distillation sweep {group}: accuracy vs. size, searched keys, runs.",
        blocks=blocks,
        width="fluid",
    )


def _with_timeout(fn, timeout: float):
    """``fn()`` in a daemon thread; TimeoutError when it does not answer in time (never hangs)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise TimeoutError(f"no answer from W&B within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def publish_wandb_report(sd: SweepData, timeout: float = 60.0) -> str:
    """Save the sweep's W&B Report; returns its URL. Raises on any failure (the caller reports it)."""
    import wandb

    w = sd.spec.base_config.tracking.wandb
    entity = w.entity or _with_timeout(lambda: wandb.Api(timeout=15).default_entity, timeout)
    if not entity:
        raise RuntimeError("no W&B entity (set tracking.wandb.entity)")
    report = wandb_report_spec(entity=entity, project=w.project, group=sd.name, searched=list(sd.spec.space))
    _with_timeout(report.save, timeout)
    return report.url


def wants_wandb_report(sd: SweepData, choice: str = "auto") -> tuple[bool, str]:
    """Whether to publish a W&B Report, and why (or why not)."""
    from kdseg.tracking.mode import resolve_mode, server_reachable
    from kdseg.tracking.wandb_records import online_runs

    if choice == "never":
        return False, "--wandb never"
    mode, why = resolve_mode(sd.spec.base_config.tracking.wandb.mode)
    if choice == "auto":
        if mode != "online":
            return False, f"W&B is {mode} ({why})"
        if not online_runs(sd.sweep_dir):
            return False, "the sweep logged no online runs (upload the offline ones with wandb sync first)"
    elif mode == "disabled":
        return False, f"W&B is disabled ({why})"
    if not server_reachable():
        return False, "the W&B server is unreachable"
    return True, ""
