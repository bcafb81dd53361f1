"""train_kd: every mode, site and alternation runs; KD learns; checkpoints resume exactly."""

from __future__ import annotations

import json

import pytest
import torch

from kdseg.config import validate_config
from kdseg.data import load_data
from kdseg.layout import read_metrics
from kdseg.models import build_model
from kdseg.train import Diverged, train_kd
from tests.conftest import tiny_config

PAIRS = {
    "r34-r18": ({"arch": "Unet", "encoder": "resnet34"}, {"arch": "Unet", "encoder": "resnet18"}),
    "r50-r18": ({"arch": "Unet", "encoder": "resnet50"}, {"arch": "Unet", "encoder": "resnet18"}),
    "r34-light": ({"arch": "Unet", "encoder": "resnet34"}, {"arch": "lightweight_unet", "width": 0.5}),
}
ALL_SITES = ["encoder", "bottleneck", "decoder", "logits"]
# Every mode, every pair and every feature loss at least once, each run with all four sites. What each
# combination computes is unit tested on small networks (test_distill: every mode x feature loss x site
# subset, adapters; test_models: every site's shapes for every architecture); these runs prove train_kd
# wires them to real networks: taps, adapters (r50-r18: channel mismatch at every site), optimisers,
# the offline teacher's checkpoint, the teacher's own training in online and mutual modes.
MODE_RUNS = {
    "online": ("r34-light", "mse"),
    "mutual": ("r50-r18", "cwd"),
    "offline": ("r34-r18", "cosine"),
    "none": ("r34-light", "mse"),
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """12 generated 32x32 scenes and their data: the plumbing runs need no more (``one_step``)."""
    from kdseg.data import write_synth

    root = write_synth(tmp_path_factory.mktemp("train32") / "scenes", n=12, size=(32, 32), seed=0)
    return root, load_data(validate_config(small_config(root)).data)


def small_config(root, **sections) -> dict:
    return tiny_config(root, **{**sections, "data": {"image_size": [32, 32], **sections.get("data", {})}})


def one_step(small, tmp_path=None, **sections):
    root, data = small
    cfg = validate_config(small_config(root, **sections))
    cfg.train.max_steps_per_epoch = 1
    reports = []
    last = train_kd(cfg, data, lambda m, c: reports.append(m), run_dir=tmp_path)
    assert len(reports) == 1
    assert last["train_loss"] is not None and torch.isfinite(torch.tensor(last["train_loss"]))
    assert 0.0 <= last["val_miou"] <= 1.0
    return last


@pytest.mark.parametrize("mode", MODE_RUNS)
def test_every_mode_runs_a_step_with_all_sites(small, tmp_path, mode):
    pair, feature_loss = MODE_RUNS[mode]
    teacher, student = PAIRS[pair]
    if mode == "offline":
        from kdseg.config import ModelConfig

        path = tmp_path / "teacher.pt"
        torch.save(build_model(ModelConfig(**teacher), 13).state_dict(), path)
        teacher = {**teacher, "checkpoint": str(path)}
    last = one_step(
        small,
        teacher=teacher,
        student=student,
        distill={"mode": mode, "sites": ALL_SITES, "feature_loss": feature_loss},
    )
    if mode == "none":
        assert last["teacher_val_miou"] is None and last["teacher_params"] == 0
        assert last["train_loss_feature"] == 0 and last["train_loss_soft"] == 0
    else:
        assert last["teacher_val_miou"] is not None and last["teacher_params"] > last["student_params"]
        assert last["train_loss_feature"] > 0 and last["train_loss_soft"] > 0  # features and logits
    if mode in ("online", "mutual"):
        assert last["teacher_train_loss"] is not None
    else:
        assert last["teacher_train_loss"] is None


@pytest.mark.parametrize("sites", [["logits"], ["bottleneck"]])
def test_a_site_alone_is_the_only_distilled_term(small, sites):
    teacher, student = PAIRS["r50-r18"]  # channel mismatches at every feature site: adapters
    last = one_step(small, teacher=teacher, student=student, distill={"sites": sites})
    if sites == ["logits"]:
        assert last["train_loss_soft"] > 0 and last["train_loss_feature"] == 0
    else:
        assert last["train_loss_feature"] > 0 and last["train_loss_soft"] == 0


@pytest.mark.parametrize("alternation", ["none", "epoch", "step", "teacher_student"])
def test_alternations_run(small, alternation):
    root, data = small
    cfg = validate_config(
        small_config(
            root,
            teacher={"arch": "Unet", "encoder": "resnet18"},
            student={"arch": "lightweight_unet", "width": 0.25},
            distill={"alternation": alternation, "teacher_entropy": 0.1},
        )
    )
    cfg.train.epochs, cfg.train.max_steps_per_epoch = 2, 2
    reports = []
    train_kd(cfg, data, lambda m, c: reports.append(m))
    assert [r["epoch"] for r in reports] == [1, 2]
    if alternation == "epoch":  # epoch 1 (index 0) is hard-only: no soft loss
        assert reports[0]["train_loss_soft"] == 0 and reports[1]["train_loss_hard"] == 0


def test_two_epochs_of_online_kd_raise_student_miou(tmp_path):
    """The student learns: after two epochs its mIoU is clearly above the untrained network's
    (48 generated 32x32 scenes, a UNet-ResNet18 teaching a UNet-ResNet18, every step of both epochs)."""
    from kdseg.data import make_loaders, write_synth
    from kdseg.train import evaluate, make_accelerator

    root = write_synth(tmp_path / "scenes", n=48, size=(32, 32), seed=0)
    cfg = validate_config(
        small_config(
            root,
            teacher={"arch": "Unet", "encoder": "resnet18"},
            train={"epochs": 2, "batch_size": 4, "lr": 2e-3},
        )
    )
    data = load_data(cfg.data)
    untrained = build_model(cfg.student, data.num_classes)
    torch.manual_seed(0)
    _, val = make_loaders(data, cfg.data, 4, 0, 0)
    before = evaluate(untrained, val, data.num_classes, data.ignore_index, make_accelerator(cfg))["miou"]
    train_kd(cfg, data, run_dir=tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["student_val_miou"] > before + 0.02, (before, rows)
    assert rows[-1]["student_val_miou"] > rows[0]["student_val_miou"]


def test_run_folder_contract(small, tmp_path):
    root, data = small
    cfg = validate_config(
        small_config(root, teacher={"arch": "Unet", "encoder": "resnet18"}, train={"max_steps_per_epoch": 2})
    )
    train_kd(cfg, data, run_dir=tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "student.pt", "checkpoint.pt"} <= names
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for key in (
        "epoch",
        "student_val_miou",
        "teacher_val_miou",
        "student_params",
        "teacher_params",
        "train_loss",
    ):
        assert key in row
    assert len(row["student_per_class_iou"]) == 13
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    student = build_model(cfg.student, 13)
    student.load_state_dict(state)  # the student as deployed: no adapters, no wrapper prefixes
    assert row["student_params"] == sum(p.numel() for p in student.parameters())


def test_resume_is_identical_to_an_uninterrupted_run(small, tmp_path):
    root, data = small
    sections = dict(
        teacher={"arch": "Unet", "encoder": "resnet18"},  # the smallest pair with adapters: light checkpoints
        student={"arch": "lightweight_unet", "width": 0.5},
        train={"epochs": 2, "max_steps_per_epoch": 3},
        distill={"sites": ["decoder", "logits"]},
    )
    straight = tmp_path / "straight"
    train_kd(validate_config(small_config(root, **sections)), data, run_dir=straight)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(metrics, ckpt):
        raise Killed  # the process dies right after epoch 1's checkpoint was written

    part = tmp_path / "part"
    cfg = validate_config(small_config(root, **sections))
    with pytest.raises(Killed):
        train_kd(cfg, data, kill_after_first_epoch, run_dir=part)
    train_kd(cfg, data, run_dir=part, resume=part / "checkpoint.pt")

    a, b = read_metrics(straight), read_metrics(part)
    assert [r["epoch"] for r in b] == [1, 2]  # no epoch counted twice
    for key in ("train_loss", "student_val_miou", "teacher_val_miou"):
        assert b[-1][key] == pytest.approx(a[-1][key], abs=1e-5), key


def test_a_sweep_trials_files_frozen_teacher_left_out_and_resume_identical(small, tmp_path):
    """What a sweep trial writes: its full checkpoints once, epoch-named, into run/ (report gets a pointer to
    each), student.pt only where ASHA can stop it and at the end; a frozen teacher from teacher.checkpoint
    is not in the checkpoint (it is rebuilt from its file), and resuming from a pointer is still exact."""
    from kdseg.checkpoint import Pointer, save_epoch_checkpoint
    from kdseg.config import ModelConfig
    from kdseg.layout import read_metrics

    root, data = small
    teacher = {"arch": "Unet", "encoder": "resnet18"}
    path = tmp_path / "teacher.pt"
    torch.save(build_model(ModelConfig(**teacher), 13).state_dict(), path)
    sections = dict(
        teacher={**teacher, "checkpoint": str(path)},
        student={"arch": "lightweight_unet", "width": 0.25},
        distill={"mode": "offline"},
        train={"epochs": 3, "max_steps_per_epoch": 2},
    )
    cfg = validate_config(small_config(root, **sections))
    straight = tmp_path / "straight"
    train_kd(cfg, data, run_dir=straight)

    run = tmp_path / "run"
    seen = []

    def save(state, epoch):
        return save_epoch_checkpoint(state, run, epoch)

    class Killed(Exception):
        pass

    def stop_after_epoch_2(metrics, pointer):
        seen.append((metrics["epoch"], pointer, (run / "student.pt").is_file()))
        if metrics["epoch"] == 2:
            raise Killed  # the process dies right after epoch 2's checkpoint

    with pytest.raises(Killed):
        train_kd(cfg, data, stop_after_epoch_2, run_dir=run, save_checkpoint=save, student_at={1})
    assert [(e, type(p), s) for e, p, s in seen] == [(1, Pointer, True), (2, Pointer, True)]
    pointer = seen[-1][1]
    assert pointer.path == run / "checkpoint-e0002.pt" and pointer.epoch == 2
    assert not (run / "checkpoint.pt").exists() and (run / "checkpoint-e0001.pt").is_file()
    state = pointer.load()
    assert "teacher" not in state and "opt_t" not in state and state["epoch"] == 2
    epoch1 = torch.load(run / "student.pt", weights_only=True)  # student_at={1}: not rewritten at epoch 2
    assert not all(torch.equal(epoch1[k], v) for k, v in state["student"].items())

    train_kd(
        cfg,
        data,
        run_dir=run,
        resume=pointer,
        save_checkpoint=save,
        student_at={1},
        keep_last_checkpoint=False,
    )
    a, b = read_metrics(straight), read_metrics(run)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for key in ("train_loss", "student_val_miou", "teacher_val_miou"):
        assert b[-1][key] == pytest.approx(a[-1][key], abs=1e-5), key
    final = torch.load(run / "student.pt", weights_only=True)  # the last epoch's, always
    for k, v in torch.load(straight / "student.pt", weights_only=True).items():
        assert torch.allclose(final[k], v, atol=1e-5), k


def test_corrupt_checkpoint_is_a_clear_error(small, tmp_path):
    from kdseg.errors import CheckpointError

    root, data = small
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    cfg = validate_config(small_config(root))
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        train_kd(cfg, data, resume=bad)


def test_nan_loss_raises_diverged(small):
    root, data = small
    cfg = validate_config(small_config(root, train={"lr": 1e30, "max_steps_per_epoch": 8, "epochs": 3}))
    with pytest.raises(Diverged):
        train_kd(cfg, data)


def test_channels_last_gives_the_same_first_step(small):
    """train.channels_last changes the memory layout only: same weights, same first loss."""
    r18 = {"arch": "Unet", "encoder": "resnet18"}
    nhwc = one_step(small, teacher=r18, train={"channels_last": True})
    nchw = one_step(small, teacher=r18)
    assert nchw["train_loss_feature"] == 0  # logits only (the default): no feature term
    assert nhwc["train_loss"] == pytest.approx(nchw["train_loss"], rel=1e-4)


def _keeping_gradients(build):
    """``build_optimizer`` whose optimisers ignore the ``zero_grad`` right after their ``step``: the
    gradients live on until the next step's own ``zero_grad``, as before gradients were freed early."""
    import types

    def make(*args, **kwargs):
        opt = build(*args, **kwargs)
        step, zero_grad = opt.step, opt.zero_grad
        stepped = [False]

        def step_(self, *a, **k):
            out = step(*a, **k)
            stepped[0] = True
            return out

        def zero_grad_(self, set_to_none: bool = True):
            if stepped[0]:
                stepped[0] = False
                return None
            return zero_grad(set_to_none=set_to_none)

        # bound, as the LR scheduler's own wrapper of step expects
        opt.step, opt.zero_grad = types.MethodType(step_, opt), types.MethodType(zero_grad_, opt)
        return opt

    return make


class _NoStepsInBackward:
    def __init__(self, optimizers):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_updates_in_backward_and_freed_gradients_change_nothing(small, tmp_path, monkeypatch, optimizer):
    """Each parameter updated as its gradient arrives, every gradient freed (memory): the same losses
    and weights as one step after backward with the gradients kept until the next step, in a run that
    steps teacher and student in turns (mutual mode, a feature site with adapters)."""
    import kdseg.train.loop as loop
    import kdseg.train.step as step

    root, data = small
    sections = dict(
        teacher={"arch": "Unet", "encoder": "resnet18"},
        student={"arch": "lightweight_unet", "width": 0.25},
        distill={"mode": "mutual", "sites": ["decoder", "logits"], "alternation": "teacher_student"},
        train={"epochs": 2, "max_steps_per_epoch": 3, "optimizer": optimizer, "optimizer_in_backward": True},
    )
    cfg = validate_config(small_config(root, **sections))
    grads_left = []

    def no_gradients_between_steps(ctx):
        nets = (ctx.student, ctx.teacher)
        grads_left.append(sum(p.grad is not None for net in nets for p in net.parameters()))

    hooked = []

    class Counting(step.StepsInBackward):
        def __init__(self, optimizers):
            super().__init__(optimizers)
            hooked.append(len(self.handles))

    monkeypatch.setattr(step, "StepsInBackward", Counting)
    train_kd(cfg, data, run_dir=tmp_path / "freed", hooks=[no_gradients_between_steps])
    assert grads_left == [0, 0] and hooked and hooked[0] > 0
    # as before: one step after backward, the gradients kept until the next step's zero_grad
    monkeypatch.setattr(step, "StepsInBackward", _NoStepsInBackward)
    monkeypatch.setattr(loop, "build_optimizer", _keeping_gradients(loop.build_optimizer))
    grads_left.clear()
    train_kd(cfg, data, run_dir=tmp_path / "kept", hooks=[no_gradients_between_steps])
    assert grads_left[0] > 0  # the last step's gradients still held at the epoch's end
    a, b = read_metrics(tmp_path / "freed"), read_metrics(tmp_path / "kept")
    for key in ("train_loss", "teacher_train_loss", "student_val_miou", "teacher_val_miou"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    freed = torch.load(tmp_path / "freed" / "checkpoint.pt", weights_only=True)
    kept = torch.load(tmp_path / "kept" / "checkpoint.pt", weights_only=True)
    for part in ("student", "teacher", "objective"):
        for k, v in freed[part].items():
            assert torch.equal(v, kept[part][k]), (part, k)
    for opt in ("opt_s", "opt_t"):  # the same optimiser state, saved the same way
        assert freed[opt]["param_groups"] == kept[opt]["param_groups"]
        for i, st in freed[opt]["state"].items():
            for k, v in st.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(kept[opt]["state"][i][k])), (opt, i, k)


def test_the_mmap_threshold_is_fixed_unless_the_user_set_it(monkeypatch):
    import platform

    from kdseg.train.heap import ENV, fix_mmap_threshold

    monkeypatch.delenv(ENV, raising=False)
    assert fix_mmap_threshold() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv(ENV, "65536")
    assert fix_mmap_threshold() is False  # the user's own setting stands


def test_steps_in_backward_by_buckets_and_the_step_after_backward_takes_what_is_left():
    """kdseg.train.step.StepsInBackward: complete buckets are stepped and freed inside backward; a bucket
    with a parameter that got no gradient keeps its gradients for the step after backward. Either way the
    weights equal one plain step after backward."""
    from kdseg.train.step import StepsInBackward

    def make(extra=()):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        return net, torch.optim.AdamW([*net.parameters(), *extra], lr=0.1)

    x = torch.randn(4, 8)
    ref, ref_opt = make()
    ref(x).sum().backward()
    ref_opt.step()

    unused = torch.nn.Parameter(torch.zeros(3))  # in the last layer's bucket, never in the graph
    net, opt = make([unused])
    steps = StepsInBackward([opt], bucket_bytes=(8 * 8 + 8) * 4)  # a bucket per Linear(8, 8)
    net(x).sum().backward()
    first, last = net[0], net[2]
    assert first.weight.grad is None and first.bias.grad is None  # stepped and freed inside backward
    assert torch.equal(first.weight, ref[0].weight)
    assert last.weight.grad is not None  # its bucket waits for `unused`: left to the step after backward
    assert not torch.equal(last.weight, ref[2].weight)
    opt.step()  # what train_step does after backward
    opt.zero_grad(set_to_none=True)
    steps.close()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(unused, torch.zeros(3))


def test_steps_in_backward_are_unhooked_when_a_trial_stops_midway(small, tmp_path, monkeypatch):
    """A stopped trial (Tune ends it from inside report) must not leave its hooks on the parameters: in a
    reused Ray actor they kept each stopped trial's models and optimisers alive (seen in a quickstart
    sweep: peaks grew to 2.9 GB)."""
    import kdseg.train.step as step

    closed = []

    class Recording(step.StepsInBackward):
        def close(self):
            super().close()
            closed.append(True)

    monkeypatch.setattr(step, "StepsInBackward", Recording)
    root, data = small
    cfg = validate_config(
        small_config(root, train={"epochs": 3, "max_steps_per_epoch": 1, "optimizer_in_backward": True})
    )

    def stop(metrics, checkpoint):
        raise RuntimeError("stopped by the scheduler")

    with pytest.raises(RuntimeError, match="stopped by the scheduler"):
        train_kd(cfg, data, stop, run_dir=tmp_path / "run")
    assert closed == [True]


def test_optimizer_in_backward_falls_back_and_says_so_where_it_cannot_run(caplog):
    from types import SimpleNamespace

    from kdseg.train.step import steps_in_backward

    t = SimpleNamespace(optimizer_in_backward=True, grad_clip=None)
    off = SimpleNamespace(optimizer_in_backward=False, grad_clip=None)
    ddp = SimpleNamespace(num_processes=2, scaler=None)
    assert steps_in_backward(ddp, off, ()) is None and not caplog.records
    with caplog.at_level("WARNING"):
        assert steps_in_backward(ddp, t, ()) is None
    assert "train.optimizer_in_backward: not with 2 processes" in caplog.text
