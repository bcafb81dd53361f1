"""``kdseg report``: report.html from a real tiny sweep (offline W&B), in headless Chromium too; the
W&B Report spec; and no W&B API key in anything kdseg writes."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kdseg.cli.report import add_report_parser
from kdseg.errors import KdsegError
from kdseg.report.html import render_html
from kdseg.report.load import load_sweep
from kdseg.report.wandb_report import wandb_report_spec
from kdseg.tracking.run import finish_sweep, search_column
from kdseg.tracking.wandb_records import offline_runs, read_offline_run
from tests.sweeps import write_space

PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("summary", "leaderboard", "pareto", "curves", "effects", "per-class", "hardware", "wandb")


def run_report(sweep_dir: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser(prog="kdseg")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(sweep_dir), *extra])
    return args.func(args)


class Page(HTMLParser):
    """The parts of report.html the tests look at."""

    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.sections: list[str] = []
        self.rows = 0
        self._in_tbody = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody and self.sections and self.sections[-1] == "leaderboard":
            self.rows += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def check_images(page: Page) -> None:
    assert page.images
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]  # embedded: no external asset
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG) and len(data) > 1000, img.get("data-plot")


# ------------------------------------------------------------------------------- the real sweep


@pytest.fixture(scope="module")
def sweep(tiny_sweep) -> Path:
    """The shared tiny sweep (conftest ``tiny_sweep``): 4 trials x at most 2 epochs on local Ray, images
    every epoch, W&B offline with a (fake) API key configured."""
    return tiny_sweep.sweep_dir


@pytest.mark.slow
def test_trial_folders_hold_images_and_an_offline_wandb_run(sweep, tiny_sweep):
    rows = load_sweep(sweep).rows
    assert len(rows) == tiny_sweep.num_samples
    for row in rows:
        trial = sweep / "tune" / row["trial_id"]
        epochs = row["epochs"]
        for epoch in range(1, epochs + 1):
            for kind in ("predictions", "layers"):
                png = trial / "run" / "images" / f"epoch_{epoch:03d}_{kind}.png"
                assert png.read_bytes().startswith(PNG), png
        (folder,) = offline_runs(trial)
        wb = read_offline_run(folder)
        assert wb.group == tiny_sweep.name and wb.name == row["trial_id"] and wb.exited
        assert wb.config["trial_id"] == row["trial_id"]
        if row["mode"] == "none":  # the no-KD control: no searched value applies to it
            assert wb.config["search"] == {} and wb.config["control"] == row["label"]
        else:
            assert set(wb.config["search"]) == {
                search_column(k) for k in ("pair", "distill.temperature", "distill.alpha")
            }
        assert [h["epoch"] for h in wb.history] == list(range(1, epochs + 1))
        assert {"val_miou", "student_params", "iou_per_mparam", "images_per_s", "peak_rss_mb"} <= set(
            wb.history[-1]
        )
        assert wb.summary["val_miou"] == pytest.approx(row["val_miou"])
        assert wb.summary["student_params"] == row["student_params"]
        assert wb.summary["iou_per_mparam"] == pytest.approx(row["iou_per_mparam"])
        assert "teacher_val_miou" in wb.summary or row["mode"] == "none"
        assert wb.summary["status"] in ("completed", "stopped")


@pytest.mark.slow
def test_finish_sweep_prints_the_sync_command(sweep):
    lines = finish_sweep(None, type("Result", (), {"sweep_dir": sweep})())
    cmd = next(line.strip() for line in lines if line.strip().startswith("wandb sync"))
    pattern = cmd.split(" ", 2)[2]
    assert sorted(Path(p) for p in __import__("glob").glob(pattern)) == offline_runs(sweep)
    assert any(line.startswith("report: kdseg report") for line in lines)


@pytest.mark.slow
def test_report_html_is_complete_and_self_contained(sweep, tiny_sweep, capsys):
    assert run_report(sweep) == 0
    out = capsys.readouterr().out
    report = sweep / "report.html"
    assert f"wrote {report}" in out and "no W&B Report: W&B is offline" in out
    page = parse(report)
    for sid in SECTIONS:
        assert sid in page.sections, sid
    assert any(s.startswith("samples-") for s in page.sections)
    assert page.rows == tiny_sweep.num_samples
    check_images(page)
    plots = {img.get("data-plot") for img in page.images}
    assert {"pareto", "curves", "effects", "per-class", "predictions", "layers"} <= plots
    text = report.read_text()
    assert "wandb sync" in text and not re.search(r"(src|href)=\"(https?:)?//", text)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(sweep, tmp_path):
    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (CI installs it: apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    report = sweep / "report.html"
    if not report.exists():
        assert run_report(sweep) == 0
    n_images = len(parse(report).images)
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        report.as_uri() + "#check",  # images load lazily: #check decodes every one
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    body = re.search(r"<body[^>]*>", out.stdout)
    assert body, out.stdout[:500]
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(0)))
    assert attrs.get("data-images") == str(n_images), attrs  # the page loaded and its script ran
    assert attrs.get("data-rendered") == str(n_images), attrs  # every plot decoded and has a size
    assert out.stdout.count('data-ok="1"') == n_images


@pytest.mark.slow
def test_no_api_key_in_any_file_kdseg_wrote(sweep, tiny_sweep):
    assert (sweep / "report.html").exists() or run_report(sweep) == 0
    key = tiny_sweep.api_key
    checked = 0
    for path in sweep.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert key.encode() not in path.read_bytes(), path
            checked += 1
    assert checked > 20
    assert key not in tiny_sweep.proc.stdout + tiny_sweep.proc.stderr


# --------------------------------------------------------------------------- no Ray, no network


def hand_sweep(tmp_path: Path, synth_dir: Path, extra: int = 0, hard_loss: bool = False) -> Path:
    """A hand-made sweep folder: completed, stopped, diverged and errored trials, no images, no W&B.

    ``extra`` more completed KD trials with other alpha/T; ``hard_loss`` logs ``train_loss_hard`` too.
    """
    from kdseg.sweep.ranking import build_leaderboard, write_leaderboard_csv
    from kdseg.sweep.space import load_space, spec_to_dict
    from kdseg.yaml_io import dump_yaml

    alpha = {"distill.alpha": {"uniform": [0.2, 0.8]}}
    spec = load_space(write_space(tmp_path, synth_dir, extra_space=alpha, num_samples=4, max_t=3))
    sweep = tmp_path / "runs" / "hand"
    dump_yaml({**spec_to_dict(spec), "sweep_name": "hand", "storage_url": "sqlite://"}, sweep / "sweep.yaml")
    base = {
        "teacher": "Unet/resnet34",
        "student": "lightweight_unet@0.5",
        "student_params": 300_000,
        "temperature": 4.0,
        "alpha": 0.5,
    }
    rows = [
        {**base, "trial_id": "a", "status": "completed", "mode": "online", "val_miou": 0.4, "epochs": 3},
        {**base, "trial_id": "b", "status": "stopped", "mode": "online", "val_miou": 0.2, "epochs": 1},
        {
            **base,
            "trial_id": "c",
            "status": "completed",
            "mode": "none",
            "teacher": "-",
            "student_params": 200_000,
            "val_miou": 0.1,
            "epochs": 3,
        },
        {**base, "trial_id": "d", "status": "diverged", "mode": "online", "val_miou": None, "epochs": 2},
        {
            **base,
            "trial_id": "e",
            "status": "error",
            "mode": "online",
            "val_miou": None,
            "epochs": 0,
            "error": "boom",
        },
    ]
    rows += [
        {**base, "trial_id": f"x{i:03d}", "status": "completed", "mode": "online", "epochs": 3}
        | {"val_miou": 0.15 + 0.2 * (i % 7) / 7, "alpha": 0.1 + 0.8 * (i % 9) / 9, "temperature": 1.0 + i % 8}
        for i in range(extra)
    ]
    write_leaderboard_csv(build_leaderboard(rows, "iou_per_mparam", 3), sweep / "leaderboard.csv")
    for row in [r for r in rows if r["status"] != "error"]:
        run = sweep / "tune" / row["trial_id"] / "run"
        run.mkdir(parents=True)
        metrics = [
            {
                "epoch": e,
                "val_miou": (row["val_miou"] or 0.1) * e / row["epochs"],
                "train_loss": (1 - row["alpha"]) * 2.0 / e + row["alpha"] * row["temperature"] ** 2 * 0.1,
                **({"train_loss_hard": 2.0 / e} if hard_loss else {}),
                "student_per_class_iou": [0.5, None, 0.1],
                "teacher_per_class_iou": None if row["mode"] == "none" else [0.6, 0.2, None],
                "images_per_s": 10.0,
                "peak_rss_mb": 900.0,
            }
            for e in range(1, row["epochs"] + 1)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + '{"cut')
        params = {"pair": "baseline" if row["mode"] == "none" else "r34-light", "distill.alpha": row["alpha"]}
        (run.parent / "params.json").write_text(
            json.dumps({**params, "distill.temperature": row["temperature"]})
        )
    return sweep


def test_report_of_a_sweep_with_failures_and_no_images(tmp_path, synth_dir):
    sd = load_sweep(hand_sweep(tmp_path, synth_dir))
    assert sd.best.trial_id == "a" and sd.baseline.trial_id == "c"
    html = render_html(sd)
    out = tmp_path / "r.html"
    out.write_text(html)
    page = parse(out)
    assert page.rows == 5
    check_images(page)
    assert "boom" in html and "wrote no images" in html and "No W&amp;B runs" in html


def test_report_refuses_what_is_not_a_finished_sweep(tmp_path):
    with pytest.raises(KdsegError, match="no such sweep folder"):
        load_sweep(tmp_path / "missing")
    with pytest.raises(KdsegError, match="not a kdseg sweep folder"):
        load_sweep(tmp_path)
    (tmp_path / "sweep.yaml").write_text("name: x\n")
    with pytest.raises(KdsegError, match="leaderboard.csv"):
        load_sweep(tmp_path)


def test_wandb_report_spec_holds_the_comparisons():
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    searched = ["pair", "distill.temperature", "distill.alpha"]
    report = wandb_report_spec(entity="team", project="kdseg", group="quick-1", searched=searched)
    assert (report.entity, report.project) == ("team", "kdseg") and "quick-1" in report.title
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [p for g in grids for p in g.panels]
    for g in grids:  # every panel compares exactly this sweep's runs (its W&B group)
        (runset,) = g.runsets
        assert (runset.entity, runset.project) == ("team", "kdseg")
        (flt,) = [expr.expr_to_filters(runset.filters)]
        assert (flt.key.section, flt.key.name, flt.op, flt.value) == ("run", "group", "=", "quick-1")

    def of(kind):
        return [p for p in panels if isinstance(p, kind)]

    scatter = next(p for p in of(wr.ScatterPlot) if p.y == wr.SummaryMetric("val_miou"))
    assert scatter.x == wr.SummaryMetric("student_params") and scatter.log_x
    (pc,) = of(wr.ParallelCoordinatesPlot)
    cols = [c.metric for c in pc.columns]
    assert cols[: len(searched)] == [wr.Config(f"search.{search_column(k)}") for k in searched]
    assert wr.SummaryMetric("val_miou") in cols and wr.SummaryMetric("student_params") in cols
    (imp,) = of(wr.ParameterImportancePlot)
    assert imp.with_respect_to == "val_miou"
    assert len(of(wr.RunComparer)) == 1
    assert {tuple(p.media_keys) for p in of(wr.MediaBrowser)} == {("images/predictions",), ("images/layers",)}
    for p in panels:  # every panel serialises without a W&B server
        view = p._to_model().model_dump(by_alias=True, mode="json", exclude_none=True)
        assert view["viewType"]
    pc_view = pc._to_model().model_dump(by_alias=True, mode="json", exclude_none=True)
    assert pc_view["config"]["columns"][1]["accessor"] == "config:search.value.distill_temperature"


# ------------------------------------------------------------------ what a reader sees (issue 19)


def drawn_figures(monkeypatch) -> list:
    """Every matplotlib figure saved from now on (the report's plots are drawn off-screen)."""
    from matplotlib.figure import Figure

    figures, real = [], Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def test_pareto_legend_leaves_every_marker_visible(tmp_path, synth_dir, monkeypatch):
    from kdseg.report.plots import pareto_png

    figures = drawn_figures(monkeypatch)
    pareto_png(load_sweep(hand_sweep(tmp_path, synth_dir, extra=12)))
    (fig,) = figures
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend, frame = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= frame.x1  # beside the axes, not over them
    baseline = next(c for c in ax.collections if c.get_label() == "no-KD baseline")
    ((x, y),) = ax.transData.transform(baseline.get_offsets())
    assert frame.x0 <= x <= frame.x1 and frame.y0 <= y <= frame.y1 and not legend.contains(x, y)
    assert legend.x1 <= fig.bbox.x1  # and the legend itself is not cut off


@pytest.mark.parametrize("hard", [True, False])
def test_loss_curves_are_comparable_or_say_they_are_not(tmp_path, synth_dir, monkeypatch, hard):
    from kdseg.report.plots import curves_png

    sd = load_sweep(hand_sweep(tmp_path, synth_dir, extra=4, hard_loss=hard))
    figures = drawn_figures(monkeypatch)
    curves_png(sd)
    (fig,) = figures
    loss_ax = fig.axes[1]
    title = loss_ax.get_title()
    ys = {tuple(line.get_ydata()) for line in loss_ax.get_lines() if len(line.get_ydata()) == 3}
    if hard:  # the CE part: the same for every alpha/T here, so one curve shape for all full trials
        assert "CE" in title and ys == {(2.0, 1.0, 2.0 / 3)}
    else:  # only the total was logged: plotted as it is, and the title says what that means
        assert "not comparable across alpha/T" in title and len(ys) > 1
    html = render_html(sd)
    assert ("comparable across trials" in html) is hard and ("are not comparable on it" in html) is not hard


def chromium() -> str:
    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (CI installs it: apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    return browser


def dump_dom(page: Path, profile: Path) -> str:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


DRIVER = """
<script>
window.addEventListener('load', function () {
  var out = {}, table = document.getElementById('lb'), input = document.getElementById('lb-filter');
  function ids() {
    return Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return r.style.display !== 'none'; })
      .map(function (r) { return r.cells[1].textContent; });
  }
  var head = Array.prototype.slice.call(table.tHead.rows[0].cells).map(function (c) { return c.textContent; });
  var miou = table.tHead.rows[0].cells[head.indexOf('val mIoU')];
  miou.click(); out.asc = ids();
  miou.click(); out.desc = ids();
  input.value = 'stopped'; input.dispatchEvent(new Event('input')); out.stopped = ids();
  out.count = document.getElementById('lb-count').textContent;
  input.value = ''; input.dispatchEvent(new Event('input')); out.all = ids();
  document.body.setAttribute('data-driver', JSON.stringify(out));
});
</script>
"""


def test_leaderboard_sorts_and_filters_in_the_page(tmp_path, synth_dir):
    import html as htmllib

    html = render_html(load_sweep(hand_sweep(tmp_path, synth_dir, extra=3)))
    assert "<script>" in html and 'id="lb-filter"' in html  # inline: no server, no library
    page = tmp_path / "driven.html"
    page.write_text(html.replace("</body>", DRIVER + "</body>"))
    body = re.search(r"<body[^>]*>", dump_dom(page, tmp_path / "profile")).group(0)
    got = json.loads(htmllib.unescape(re.search(r'data-driver="([^"]*)"', body).group(1)))
    rows = {r["trial_id"]: r for r in load_sweep(tmp_path / "runs" / "hand").rows}
    finished = sorted((r["val_miou"], t) for t, r in rows.items() if r["val_miou"] is not None)
    assert got["asc"][: len(finished)] == [t for _, t in finished]  # numbers ascending, blanks last
    assert got["desc"][: len(finished)] == [t for _, t in reversed(finished)]
    assert set(got["asc"][len(finished) :]) == {"d", "e"} == set(got["desc"][len(finished) :])
    assert got["stopped"] == ["b"] and got["count"] == f"1 of {len(rows)} trials"
    assert sorted(got["all"]) == sorted(rows)


def test_sample_images_are_embedded_small_lazy_and_linked(tmp_path, synth_dir):
    import io

    import numpy as np
    from PIL import Image

    sweep = hand_sweep(tmp_path, synth_dir)
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.random((24, 24, 3)), np.ones((16, 16, 1)))  # activation-map-like blocks
    pixels = (255 * np.clip(smooth + 0.05 * rng.random((384, 384, 3)), 0, 1)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    images = sweep / "tune" / "a" / "run" / "images"
    images.mkdir()
    (images / "epoch_003_layers.png").write_bytes(buf.getvalue())
    out = sweep / "report.html"
    out.write_text(render_html(load_sweep(sweep)))
    page = parse(out)
    check_images(page)
    (layers,) = [i for i in page.images if i.get("data-plot") == "layers"]
    embedded = base64.b64decode(layers["src"].split(",", 1)[1])
    assert len(embedded) < len(buf.getvalue()) / 2 and layers.get("loading") == "lazy"
    assert Image.open(io.BytesIO(embedded)).size == (384, 384)
    assert all(i.get("loading") is None for i in page.images if i.get("data-plot") == "pareto")
    href = re.search(r'<a href="([^"]+)">full resolution</a>', out.read_text()).group(1)
    assert (out.parent / href).read_bytes() == buf.getvalue()  # relative to report.html's folder
