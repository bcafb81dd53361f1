"""Search-space files: parsing, Ray Tune conversion, trial configs, and errors that name file and key."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest
import yaml

from kdseg.config import load_config
from kdseg.errors import ConfigError
from kdseg.sweep.space import (
    LogUniform,
    SweepSpec,
    Uniform,
    control_params,
    controls,
    decode_params,
    describe_trial,
    grid_size,
    initial_points,
    load_resolved,
    load_space,
    searched_keys,
    spec_to_dict,
    to_tune_space,
    trial_config,
)
from kdseg.yaml_io import dump_yaml

REPO = Path(__file__).resolve().parents[1]

BASE = """
name: unit
data: {format: synthetic, root: null, num_classes: 5, image_size: [64, 64], synth: {n: 8, size: [64, 64]}}
teacher: {arch: Unet, encoder: resnet34}
student: {arch: Unet, encoder: resnet18}
distill: {mode: online, temperature: 4.0, alpha: 0.5, sites: [logits]}
train: {epochs: 6, batch_size: 4, num_workers: 0}
"""

SPACE = """
base: base.yaml
space:
  distill.temperature: {loguniform: [1, 10]}
  distill.alpha: {uniform: [0.3, 0.9]}
  train.batch_size: {choice: [4, 8]}
  distill.sites: {choice: [[logits], [logits, decoder]]}
  distill.feature_weight: {quniform: [0.5, 2.0, 0.5]}
  train.seed: {randint: [2, 5]}
  distill.alternation: {grid: [none, step]}
  pair: {choice: [{teacher.encoder: resnet34, student.encoder: resnet18},
                  {teacher.encoder: resnet50, student.encoder: mobilenet_v2, label: r50-mnv2},
                  {distill.mode: none, label: baseline}]}
sweep: {num_samples: 8, metric: val_miou, mode: max, objective: iou_per_mparam,
        asha: {max_t: 4, grace_period: 1, reduction_factor: 3},
        resources_per_trial: {cpu: 2, gpu: 0.5}, max_concurrent: 2, seed: 0, max_failures: 1}
storage: null
name: unit-sweep
"""


def write(tmp_path: Path, space: str = SPACE, base: str | None = BASE, name: str = "space.yaml") -> Path:
    if base is not None:
        (tmp_path / "base.yaml").write_text(textwrap.dedent(base))
    p = tmp_path / name
    p.write_text(textwrap.dedent(space))
    return p


@pytest.fixture
def spec(tmp_path: Path) -> SweepSpec:
    return load_space(write(tmp_path))


# ------------------------------------------------------------------------------------------ parsing


def test_parses_every_domain(spec: SweepSpec, tmp_path: Path) -> None:
    s = spec.space
    assert s["distill.temperature"] == LogUniform(low=1.0, high=10.0)
    assert s["distill.alpha"] == Uniform(low=0.3, high=0.9)
    assert (s["distill.feature_weight"].kind, s["distill.feature_weight"].q) == ("quniform", 0.5)
    assert (s["train.seed"].kind, s["train.seed"].low, s["train.seed"].high) == ("randint", 2, 5)
    assert s["train.batch_size"].labels == [4, 8]
    # list values: stored as the config holds them (schema order), encoded as string labels
    assert s["distill.sites"].values == [["logits"], ["decoder", "logits"]]
    assert s["distill.sites"].labels == ["logits", "decoder+logits"]
    assert s["distill.alternation"].kind == "grid"
    pair = s["pair"]
    assert pair.group and pair.labels == ["resnet34>resnet18", "r50-mnv2", "baseline"]
    assert pair.values[1] == {"teacher.encoder": "resnet50", "student.encoder": "mobilenet_v2"}
    assert spec.base == (tmp_path / "base.yaml").resolve()
    assert spec.base_config.train.epochs == 6
    assert spec.sweep.asha.max_t == 4 and spec.sweep.resources_per_trial.gpu == 0.5
    assert spec.name == "unit-sweep" and spec.storage is None


def test_defaults(tmp_path: Path) -> None:
    spec = load_space(write(tmp_path, "base: base.yaml\nspace: {distill.alpha: {uniform: [0.1, 0.9]}}\n"))
    sw = spec.sweep
    assert sw.num_samples == 8 and sw.metric == "val_miou" and sw.mode == "max"
    assert sw.objective == "iou_per_mparam" and sw.max_concurrent is None
    assert sw.asha.max_t == 6  # the base config's train.epochs
    assert (sw.asha.grace_period, sw.asha.reduction_factor) == (2, 2)
    assert (sw.resources_per_trial.cpu, sw.resources_per_trial.gpu) == (1, 0)
    assert initial_points(spec) == [] and grid_size(spec) == 1
    # a one-epoch sweep: the default grace period is max_t, not an error about grace > max_t
    one = load_space(
        write(
            tmp_path,
            "base: base.yaml\nspace: {distill.alpha: {uniform: [0.1, 0.9]}}\nsweep: {asha: {max_t: 1}}\n",
        )
    )
    assert (one.sweep.asha.max_t, one.sweep.asha.grace_period) == (1, 1)


def test_overrides_route_to_spec_and_base(tmp_path: Path) -> None:
    spec = load_space(
        write(tmp_path),
        [
            "sweep.num_samples=12",
            "sweep.asha.max_t=3",
            "name=other",
            "storage=journal:optuna.log",
            "train.lr=3e-4",
            "data.num_classes=7",
            "space.distill.alpha={uniform: [0.1, 0.2]}",
        ],
    )
    assert spec.sweep.num_samples == 12 and spec.max_t == 3 and spec.name == "other"
    assert spec.storage == "journal:" + str(Path("optuna.log").resolve())
    assert spec.base_config.train.lr == pytest.approx(3e-4) and spec.base_config.data.num_classes == 7
    assert (spec.space["distill.alpha"].low, spec.space["distill.alpha"].high) == (0.1, 0.2)


def test_unknown_override_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"space\.yaml: --set bogus\.x: unknown key"):
        load_space(write(tmp_path), ["bogus.x=1"])
    with pytest.raises(ConfigError, match=r"space\.yaml: --set train\.lrr: unknown key"):
        load_space(write(tmp_path), ["train.lrr=1"])


# ------------------------------------------------------------------------------------- Ray / Optuna


def test_to_tune_space_types(spec: SweepSpec) -> None:
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized

    ts = to_tune_space(spec)
    assert list(ts) == list(spec.space)
    assert isinstance(ts["distill.alpha"], Float) and (
        ts["distill.alpha"].lower,
        ts["distill.alpha"].upper,
    ) == (
        0.3,
        0.9,
    )
    assert isinstance(ts["distill.temperature"].get_sampler(), LogUniform)
    assert isinstance(ts["distill.feature_weight"].get_sampler(), Quantized)
    seed = ts["train.seed"]
    assert isinstance(seed, Integer) and (seed.lower, seed.upper) == (2, 6)  # inclusive 5 -> exclusive 6
    for key in ("train.batch_size", "distill.sites", "distill.alternation", "pair"):
        assert isinstance(ts[key], Categorical)
        assert all(c is None or isinstance(c, (bool, int, float, str)) for c in ts[key].categories)


def test_optuna_accepts_space_and_points(spec: SweepSpec) -> None:
    """Dotted names survive OptunaSearch; enqueued grid points come out first; randint stays inclusive."""
    from ray.tune.search.optuna import OptunaSearch

    ranges = OptunaSearch.convert_search_space(to_tune_space(spec))
    assert (ranges["train.seed"].low, ranges["train.seed"].high) == (2, 5)
    searcher = OptunaSearch(metric="val_miou", mode="max", points_to_evaluate=initial_points(spec), seed=0)
    searcher.set_search_properties("val_miou", "max", to_tune_space(spec))
    first = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [p["distill.alternation"] for p in first[:2]] == ["none", "step"]
    for i, p in enumerate(first):
        assert set(p) == set(spec.space)
        cfg = trial_config(spec, p, name=f"t{i}")
        assert cfg.train.epochs == 4 and 2 <= cfg.train.seed <= 5


# --------------------------------------------------------------------------------------- trials


def test_trial_config_decodes_labels_and_groups(spec: SweepSpec) -> None:
    params = {
        "distill.temperature": 2.0,
        "distill.alpha": 0.7,
        "train.batch_size": 8,
        "distill.sites": "decoder+logits",
        "distill.feature_weight": 1.5,
        "train.seed": 5,
        "distill.alternation": "step",
        "pair": "r50-mnv2",
    }
    cfg = trial_config(spec, params, name="trial-1")
    assert cfg.name == "trial-1"
    assert cfg.train.epochs == spec.sweep.asha.max_t == 4  # max_t wins over the base's 6
    assert cfg.distill.sites == ["decoder", "logits"] and cfg.distill.alternation == "step"
    assert (cfg.teacher.encoder, cfg.student.encoder) == ("resnet50", "mobilenet_v2")
    assert cfg.train.batch_size == 8 and cfg.train.seed == 5 and cfg.distill.alpha == 0.7
    assert describe_trial(cfg) == {
        "teacher": "Unet/resnet50",
        "student": "Unet/mobilenet_v2",
        "mode": "online",
        "temperature": 2.0,
        "alpha": 0.7,
        "distill_site": "decoder+logits",
        "alternation": "step",
    }
    # labels round-trip: encode(decode(label)) == label for every categorical value
    for d in (d for d in spec.space.values() if d.categorical):
        for label in d.labels:
            assert d.encode(d.decode(label)) == label
    baseline = trial_config(spec, {**params, "pair": "baseline"})
    assert baseline.name == "unit-sweep" and baseline.distill.mode == "none"
    assert describe_trial(baseline)["teacher"] == "-"
    assert decode_params(spec, {**params, "pair": "resnet34>resnet18"})["student.encoder"] == "resnet18"


def test_describe_lightweight_student(tmp_path: Path) -> None:
    spec = load_space(
        write(
            tmp_path,
            "base: base.yaml\nspace:\n  pair: {choice: [{student.arch: lightweight_unet, student.width: 0.5}]}\n",
        )
    )
    assert spec.space["pair"].labels == [">lightweight_unet-0.5"]
    cfg = trial_config(spec, {"pair": ">lightweight_unet-0.5"})
    assert describe_trial(cfg)["student"] == "lightweight_unet@0.5"


def test_searched_keys(spec: SweepSpec) -> None:
    keys = searched_keys(spec)
    assert keys[:3] == ["distill.temperature", "distill.alpha", "train.batch_size"]
    assert {"teacher.encoder", "student.encoder", "distill.mode"} <= set(keys) and len(keys) == len(set(keys))


def test_trial_config_rejects_bad_params(spec: SweepSpec) -> None:
    point = initial_points(spec)[0]
    with pytest.raises(ConfigError, match="pair: 'nope' is not one of"):
        trial_config(spec, {**point, "pair": "nope"})
    with pytest.raises(ConfigError, match="bogus: not in the search space"):
        trial_config(spec, {**point, "bogus": 1})
    with pytest.raises(ConfigError, match=r"distill\.alpha: 1\.5 is outside"):
        trial_config(spec, {**point, "distill.alpha": 1.5})


def test_initial_points_cover_grid_product(tmp_path: Path) -> None:
    space = """
    base: base.yaml
    space:
      distill.alternation: {grid: [none, epoch, step]}
      pair: {grid: [{student.encoder: resnet18, label: r18}, {student.encoder: mobilenet_v2, label: mnv2}]}
      distill.alpha: {uniform: [0.6, 0.9]}
      distill.temperature: {loguniform: [1, 16]}
      distill.feature_weight: {quniform: [0.5, 2.0, 0.5]}
      train.batch_size: {choice: [2, 4]}
      train.seed: {randint: [3, 8]}
    sweep: {num_samples: 6}
    """
    spec = load_space(write(tmp_path, space))
    pts = initial_points(spec)
    assert grid_size(spec) == 6 and len(pts) == 6
    combos = {(p["distill.alternation"], p["pair"]) for p in pts}
    assert combos == set(itertools.product(["none", "epoch", "step"], ["r18", "mnv2"]))
    for p in pts:
        assert list(p) == list(spec.space)
        assert p["distill.alpha"] == pytest.approx(0.75)  # base 0.5 outside [0.6, 0.9]: midpoint
        assert p["distill.temperature"] == 4.0  # base value inside the domain
        assert p["distill.feature_weight"] == 1.0  # base 1.0 lies on the q grid
        assert p["train.batch_size"] == 4  # base value is a choice
        assert p["train.seed"] == 5  # base 0 outside [3, 8]: midpoint
    with pytest.raises(ConfigError, match=r"space\.yaml: sweep\.num_samples: 5 is less than the 6 grid"):
        load_space(write(tmp_path, space), ["sweep.num_samples=5"])


def test_resolved_round_trip(spec: SweepSpec, tmp_path: Path) -> None:
    # the sweep driver may add its own keys next to the spec
    out = dump_yaml({**spec_to_dict(spec), "sweep_name": "s1"}, tmp_path / "run" / "sweep.yaml")
    doc = yaml.safe_load(out.read_text())
    assert doc["base"] == str(spec.base) and doc["base_config"]["train"]["epochs"] == 6
    (tmp_path / "base.yaml").unlink()  # the resolved spec no longer needs the base file
    again = load_resolved(tmp_path / "run")
    assert again.space == spec.space and again.sweep == spec.sweep
    assert again.base_config == spec.base_config and again.base == spec.base and again.name == spec.name
    assert again.extra == {"sweep_name": "s1"} and spec_to_dict(again)["sweep_name"] == "s1"
    assert initial_points(again) == initial_points(spec)
    with pytest.raises(ConfigError, match="not a resolved sweep.yaml"):
        load_resolved(write(tmp_path, "base: base.yaml\nspace: {distill.alpha: {uniform: [0.1, 0.9]}}\n"))


# ---------------------------------------------------------------------------------------- errors

ERRORS = [
    # (case, file text edit: (old, new) on SPACE or a whole file, key path expected in the message)
    ("unknown top-level key", ("storage: null", "storage: null\nbogus: 1"), "bogus", "unknown key"),
    (
        "unknown dotted key",
        ("distill.alpha: {uniform", "distill.alpah: {uniform"),
        "space.distill.alpah",
        "did you mean distill.alpha",
    ),
    ("empty choice", ("{choice: [4, 8]}", "{choice: []}"), "space.train.batch_size", "non-empty list"),
    ("empty grid", ("{grid: [none, step]}", "{grid: []}"), "space.distill.alternation", "non-empty list"),
    ("low > high", ("{uniform: [0.3, 0.9]}", "{uniform: [0.9, 0.3]}"), "space.distill.alpha", "greater than"),
    (
        "loguniform <= 0",
        ("{loguniform: [1, 10]}", "{loguniform: [0, 10]}"),
        "space.distill.temperature",
        "0 < low",
    ),
    (
        "quniform q <= 0",
        ("[0.5, 2.0, 0.5]", "[0.5, 2.0, 0]"),
        "space.distill.feature_weight",
        "q must be > 0",
    ),
    (
        "randint non-integer",
        ("{randint: [2, 5]}", "{randint: [2, 5.5]}"),
        "space.train.seed",
        "must be integers",
    ),
    (
        "unknown domain",
        ("{uniform: [0.3, 0.9]}", "{normal: [0.3, 0.9]}"),
        "space.distill.alpha",
        "unknown domain",
    ),
    (
        "alpha endpoint out of range",
        ("{uniform: [0.3, 0.9]}", "{uniform: [0.3, 1.5]}"),
        "space.distill.alpha",
        "less than or equal to 1",
    ),
    (
        "unknown encoder in a pair",
        ("student.encoder: mobilenet_v2", "student.encoder: resnet999"),
        "space.pair",
        "unknown encoder 'resnet999'",
    ),
    ("invalid choice value", ("[none, step]", "[none, sideways]"), "space.distill.alternation", "sideways"),
    (
        "group key not dotted",
        ("label: baseline", "label: baseline, mode: none"),
        "space.pair",
        "group keys are dotted config keys",
    ),
    (
        "key set directly and by a group",
        ("distill.alpha: {uniform: [0.3, 0.9]}", "teacher.encoder: {choice: [resnet34]}"),
        "space.pair",
        "teacher.encoder is also set directly",
    ),
    (
        "uniform on an int field",
        ("{choice: [4, 8]}", "{uniform: [4, 8]}"),
        "space.train.batch_size",
        "integer",
    ),
    ("searching train.epochs", ("train.seed:", "train.epochs:"), "space.train.epochs", "sweep.asha.max_t"),
    ("group named like a section", ("  pair: {choice", "  train: {choice"), "space.train", "config section"),
    ("grace_period > max_t", ("grace_period: 1", "grace_period: 9"), "sweep.asha.grace_period", "exceeds"),
    ("bad metric mode", ("mode: max", "mode: maximum"), "sweep.mode", "max"),
    ("num_samples < grid", ("num_samples: 8", "num_samples: 1"), "sweep.num_samples", "grid combinations"),
    ("searching data keys", ("train.seed:", "data.image_size:"), "space.data.image_size", "decoded once"),
    ("bad storage", ("storage: null", "storage: optuna.db"), "storage", "SQLAlchemy URL"),
    ("missing base", ("base: base.yaml", "base: nowhere/missing.yaml"), "base", "missing.yaml"),
]


@pytest.mark.parametrize(("case", "edit", "key", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_file_and_key(
    tmp_path: Path, case: str, edit: tuple[str, str], key: str, message: str
) -> None:
    old, new = edit
    assert old in SPACE, case
    path = write(tmp_path, SPACE.replace(old, new, 1), name="bad_space.yaml")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    text = str(info.value)
    assert str(path) in text and f": {key}" in text and message in text, text


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "base: base.yaml\nspace:\n  distill.alpha: {uniform: [0.3, 0.9]\n", name="broken.yaml"
    )
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+, column \d+: malformed YAML"):
        load_space(path)


def test_invalid_base_names_base_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, base=BASE.replace("batch_size: 4", "batch_size: 0"))
    with pytest.raises(ConfigError, match=r"base\.yaml: train\.batch_size: Input should be greater"):
        load_space(path)


def test_missing_base_key(tmp_path: Path) -> None:
    path = write(tmp_path, "space: {distill.alpha: {uniform: [0.1, 0.9]}}\n", name="nobase.yaml")
    with pytest.raises(ConfigError, match=r"nobase\.yaml: base: missing"):
        load_space(path)


def test_clashing_grid_combination_is_caught(tmp_path: Path) -> None:
    """Each value is valid alone, but mutual mode cannot train a frozen teacher: the grid point fails."""
    space = """
    base: base.yaml
    space:
      distill.mode: {grid: [online, mutual]}
      frozen: {grid: [{teacher.frozen: false}, {teacher.frozen: true}]}
    sweep: {num_samples: 4}
    """
    with pytest.raises(ConfigError, match=r"space\.yaml: trial .*teacher\.frozen must be false"):
        load_space(write(tmp_path, space))


# ------------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_search_spaces_load(path: Path) -> None:
    spec = load_space(path)
    assert spec.base.is_file()
    assert spec.sweep.num_samples >= grid_size(spec)
    for point in initial_points(spec):
        assert trial_config(spec, point).train.epochs == spec.max_t
    assert path.read_text().startswith("#")  # a comment header says what it asks and costs


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiments_load(path: Path) -> None:
    """Every experiment config validates and its class count is the one its dataset format defines."""
    expected = {"carla": 13, "synthetic": 13, "camvid": 11, "cityscapes": 19, "bdd100k": 19}
    cfg = load_config(path)
    assert cfg.data.num_classes == expected[cfg.data.format]


def test_quickstart_is_small() -> None:
    spec = load_space(REPO / "search_spaces" / "quickstart_cpu.yaml")
    assert spec.sweep.num_samples >= 8 and spec.max_t == 3 and spec.sweep.asha.grace_period == 2
    assert spec.sweep.resources_per_trial.cpu == 1 and spec.sweep.resources_per_trial.gpu == 0
    assert spec.sweep.max_concurrent == 2
    assert spec.base_config.data.format == "synthetic" and spec.base_config.train.num_workers == 0
    pairs = {describe_trial(trial_config(spec, p))["student"] for p in initial_points(spec)}
    assert {"Unet/resnet18", "lightweight_unet@0.5"} <= pairs
    # the no-KD baseline is the control of each student, not a grid point
    modes = {trial_config(spec, p).distill.mode for p in initial_points(spec)}
    assert modes == {"online"}
    ctl = {describe_trial(trial_config(spec, control_params(spec, c)))["student"]: c for c in controls(spec)}
    assert set(ctl) == {"Unet/resnet18", "lightweight_unet@0.5"}
    assert all(trial_config(spec, control_params(spec, c)).distill.mode == "none" for c in ctl.values())
    assert {"distill.temperature", "distill.alpha"} <= set(spec.space)


def test_each_domain_kind_is_one_class_that_round_trips():
    """kind -> class; the dump parses back to the same class; Ray's domain samples inside it."""
    from pydantic import TypeAdapter

    from kdseg.sweep.space import DOMAIN_KINDS, Choice, Domain, Grid, QUniform, RandInt
    from kdseg.sweep.space.distributions import DOMAIN_CLASSES

    domains = [
        Uniform(low=0.1, high=0.9),
        LogUniform(low=1e-4, high=1e-2),
        QUniform(low=0.0, high=1.0, q=0.25),
        RandInt(low=1, high=4),
        Choice(values=["a", "b"], labels=["a", "b"]),
        Grid(values=[1, 2], labels=[1, 2]),
    ]
    assert sorted(DOMAIN_CLASSES) == sorted(DOMAIN_KINDS) == sorted(d.kind for d in domains)
    adapter = TypeAdapter(Domain)
    for d in domains:
        assert adapter.validate_python(d.model_dump()) == d
        assert d.contains(d.midpoint()), d
        for _ in range(20):
            assert d.contains(d.to_tune().sample()), d
    assert RandInt(low=1, high=4).to_tune().upper == 5  # Ray's upper bound is exclusive
    assert not QUniform(low=0.0, high=1.0, q=0.25).contains(0.3)
    with pytest.raises(ValueError, match="not a multiple of q"):
        QUniform.from_args([0.1, 1.0, 0.25], "space.x.quniform")
    with pytest.raises(ValueError, match="0 < low"):
        LogUniform.from_args([0.0, 1.0], "space.x.loguniform")
