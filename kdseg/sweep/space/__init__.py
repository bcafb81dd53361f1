"""Search spaces: which keys of a training config a sweep searches, and over what.

A search-space file names a base training config and the keys to search::

    base: ../experiments/carla_online_r34_r18.yaml   # relative to this file
    space:
      distill.temperature: {loguniform: [1, 10]}
      distill.alpha: {uniform: [0.3, 0.9]}
      distill.feature_weight: {quniform: [0.5, 2.0, 0.5]}
      train.batch_size: {choice: [4, 8]}
      train.seed: {randint: [0, 3]}                     # inclusive: 0, 1, 2 or 3
      distill.sites: {choice: [[logits], [logits, decoder]]}
      distill.alternation: {grid: [none, step]}
      pair: {choice: [{teacher.encoder: resnet34, student.encoder: resnet18},
                      {distill.mode: none, label: baseline}]}
    sweep: {num_samples: 32, metric: val_miou, mode: max, objective: iou_per_mparam,
            asha: {max_t: 40, grace_period: 4, reduction_factor: 3},
            resources_per_trial: {cpu: 2, gpu: 0.5}, max_concurrent: 8, seed: 0, max_failures: 0}
    storage: null   # null: sqlite optuna.db in the sweep folder; an SQLAlchemy URL; or journal:PATH
    name: null      # default sweep name (the command line's --name wins)
    faults: []      # fault injection for testing kdseg itself (kdseg.faults); never needed otherwise

:func:`load_space` turns it into a validated :class:`SweepSpec`; every problem is a
:class:`~kdseg.errors.ConfigError` naming the file and the key path, raised before anything runs.

Rules
-----
Keys of ``space``
    A key with a dot (``distill.alpha``) is a key of the training config (:class:`KDConfig`); it must
    exist in the schema. A key without a dot (``pair``) is a *grouped choice*: its ``choice`` or
    ``grid`` values are mappings of dotted config keys set together, plus an optional ``label``.
    A group may not be named like a config section (``train``...). One config key may be set by only
    one entry (directly or by one group). ``train.epochs`` and ``name`` cannot be searched (below), nor
    ``data.*`` other than ``data.augment.*``: the dataset is decoded once per sweep, shared by all trials.

Domains
    ``uniform: [low, high]``, ``loguniform: [low, high]`` (low > 0), ``quniform: [low, high, q]``
    (q > 0; low and high must be multiples of q, as Ray requires; values are low + k*q),
    ``randint: [low, high]`` with **both bounds inclusive** (mapped to Ray's ``tune.randint(low, high + 1)``,
    whose upper bound is exclusive), ``choice: [v, ...]`` (any YAML values, lists included) and
    ``grid: [v, ...]``. Integer config fields accept ``randint``, ``choice`` and ``grid`` (and ``quniform``
    with integer bounds and q), not ``uniform``/``loguniform``. Every choice/grid value and both endpoints
    of a numeric domain are applied to the base config and validated when the file is loaded, so
    ``distill.alpha: {uniform: [0.5, 1.5]}`` or ``student.encoder: resnet999`` in a group fail at once.
    Choice and grid values are stored as the validated config holds them (``distill.sites: [logits,
    decoder]`` becomes ``[decoder, logits]``, the schema's input-to-output order).

Grid keys
    OptunaSearch cannot run ``tune.grid_search``. A ``grid`` key is therefore an ordinary categorical
    parameter for Optuna, and :func:`initial_points` returns the cartesian product of all grid keys as
    ``points_to_evaluate`` (every other key at the base config's value when it lies in its domain, else
    the domain's midpoint - geometric for loguniform - or its first choice). Optuna enqueues them, so
    every grid combination runs first and the sampler takes over afterwards; ``sweep.num_samples`` must
    be at least the number of grid combinations. Without grid keys there are no initial points.

Parameter names and values seen by Ray Tune and Optuna
    Parameter names are the dotted keys as written (``distill.alpha``) and group names (``pair``). Ray
    flattens nested param spaces with ``/`` (``ray/tune/search/optuna/optuna_search.py`` calls
    ``flatten_dict(spec, prevent_delimiter=True)`` and ``unflatten_dict`` with delimiter ``/``), so
    dots pass through untouched; ``/`` is never used in a name. Optuna's categorical values must be
    None, bool, int, float or str, so when any value of a choice/grid is a list or a mapping, all its
    values are encoded as string labels: lists as ``"decoder+logits"``, groups as their ``label`` or an
    automatic one (``"resnet34>resnet18"``: teacher settings ``>`` student settings, other settings as
    ``key=value``). :func:`trial_config` decodes them; labels are part of the spec, so a resumed sweep
    decodes the same way.

Epochs
    ASHA's time budget and the trainer must agree: every trial config gets ``train.epochs =
    sweep.asha.max_t``. ``max_t`` defaults to the base config's ``train.epochs``.

Overrides (``load_space(path, overrides)``, the command line's ``--set key.path=value``)
    Values are parsed as YAML (``kdseg.overrides.parse_override``). A key whose first part is a top-level
    key of the space file (``sweep.num_samples=4``, ``sweep.asha.max_t=2``, ``storage=journal:x.log``,
    ``name=try1``, ``base=other.yaml``) changes the space file; ``space.KEY=DOMAIN`` replaces or adds one
    search key (``space.distill.alpha={uniform: [0.1, 0.2]}``). A key whose first part is a section of
    the training config (``data``, ``teacher``, ``student``, ``distill``, ``train``, ``tracking``) changes
    the base config before anything is validated (``train.lr=3e-4``, ``data.root=/data/carla``); a
    searched key keeps its search domain, so overriding it only moves the initial points. Any other key
    is an error. ``name`` always means the sweep name (trial configs get their own).

Storage
    ``null`` (the sweep folder's ``optuna.db``), an SQLAlchemy URL (``scheme://...``), or
    ``journal:PATH`` (an Optuna journal file; a relative PATH is resolved against the working directory,
    like the paths of a training config).

Resolved spec
    :func:`spec_to_dict` gives what ``sweep.yaml`` holds: the spec as run, with the resolved base config
    inline under ``base_config`` (and its original path under ``base``). Such a file is itself a valid
    space file (the inline config wins over ``base``); :func:`load_resolved` reads it back, keeping any
    other top-level keys (added by the sweep driver) in ``spec.extra``.
"""

from kdseg.sweep.selection import CONTROL_KEY
from kdseg.sweep.space.controls import (
    Control,
    control_params,
    controls,
    default_params,
    grid_size,
    initial_points,
    search_labels,
    to_tune_space,
)
from kdseg.sweep.space.decode import decode_params, describe_trial, trial_config, trial_label
from kdseg.sweep.space.distributions import (
    DOMAIN_KINDS,
    Choice,
    Domain,
    Grid,
    LogUniform,
    QUniform,
    RandInt,
    Uniform,
)
from kdseg.sweep.space.parse import load_resolved, load_space, searched_keys, spec_to_dict
from kdseg.sweep.space.schema import (
    AshaSettings,
    FaultRule,
    FinalEval,
    Resources,
    SweepSettings,
    SweepSpec,
    check_sweep_name,
)

__all__ = [
    "DOMAIN_KINDS",
    "FaultRule",
    "FinalEval",
    "check_sweep_name",
    "AshaSettings",
    "Domain",
    "Choice",
    "Grid",
    "LogUniform",
    "QUniform",
    "RandInt",
    "Uniform",
    "Resources",
    "SweepSettings",
    "SweepSpec",
    "CONTROL_KEY",
    "Control",
    "control_params",
    "controls",
    "decode_params",
    "default_params",
    "describe_trial",
    "grid_size",
    "initial_points",
    "load_resolved",
    "load_space",
    "search_labels",
    "searched_keys",
    "spec_to_dict",
    "to_tune_space",
    "trial_config",
    "trial_label",
]
