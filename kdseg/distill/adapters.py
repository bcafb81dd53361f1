"""Learned adapters that map student features onto the teacher's channels and spatial size.

Pairing rule. A feature site (``encoder``, ``bottleneck``, ``decoder``) holds a list of tensors per
network, and the lists may differ in length: an smp ResNet encoder yields 6 stage outputs (the input
included), the lightweight UNet 3. The tensors are aligned **from the deepest end**: with ``n =
min(len(student), len(teacher))`` tensors paired, pair ``k`` (``0 <= k < n``, shallow to deep) joins
``student[len(student) - n + k]`` with ``teacher[len(teacher) - n + k]``. The shallowest surplus
stages of the longer list are not distilled. Deep features carry the semantics that distillation
is after, and the deepest stages of two UNets correspond one-to-one. Tensors with zero channels
(some smp encoders have empty stages) are left out of the pairs.

Adapter per pair: a 1x1 convolution without bias from the student's channels to the teacher's where
they differ, :class:`torch.nn.Identity` where they are equal. It is applied at the student's
resolution, then the result is resized bilinearly to the teacher feature's spatial size (taken from
the tensor at run time, so other input sizes work). A 1x1 conv and bilinear resizing commute, so the
order changes nothing but the cost.

The adapters train with the student (their parameters go to the student's optimiser) but are not
part of the deployed student and do not count in its parameter count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

FEATURE_SITES = ("encoder", "bottleneck", "decoder")

Shape = Sequence[int]  # (C, H, W)
Shapes = Mapping[str, Sequence[Shape] | Shape]


def _shape_list(shapes: Shapes, site: str, who: str) -> list[tuple[int, ...]]:
    if site not in shapes:
        raise ValueError(f"{who} has no feature shapes for site {site!r} (has: {', '.join(shapes)})")
    value = shapes[site]
    if len(value) > 0 and isinstance(value[0], int):  # a single (C, H, W)
        value = [value]  # type: ignore[list-item]
    out = [tuple(int(d) for d in s) for s in value]  # type: ignore[union-attr]
    for s in out:
        if len(s) != 3:
            raise ValueError(f"{who} feature shape at site {site!r} must be (C, H, W), got {s}")
    return out


def pair_indices(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """``(student_index, teacher_index)`` pairs aligned from the deepest end, shallow to deep."""
    n = min(n_student, n_teacher)
    return [(n_student - n + k, n_teacher - n + k) for k in range(n)]


class FeatureAdapters(nn.Module):
    """One adapter per paired (student, teacher) tensor of each feature site.

    ``student_shapes`` / ``teacher_shapes``: ``{site: [(C, H, W), ...]}`` as produced by
    ``kdseg.models.feature_shapes`` (a bare ``(C, H, W)`` is accepted for a one-tensor site; a
    ``logits`` entry is ignored). ``sites``: the feature sites to build adapters for; default every
    feature site present in both mappings.
    """

    def __init__(
        self,
        student_shapes: Shapes,
        teacher_shapes: Shapes,
        sites: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if sites is None:
            sites = [s for s in FEATURE_SITES if s in student_shapes and s in teacher_shapes]
        self.sites: tuple[str, ...] = tuple(s for s in sites if s != "logits")
        self.layers = nn.ModuleDict()
        self._pairs: dict[str, list[tuple[int, int]]] = {}
        self.student_shapes: dict[str, list[tuple[int, ...]]] = {}
        self.teacher_shapes: dict[str, list[tuple[int, ...]]] = {}
        for site in self.sites:
            if site not in FEATURE_SITES:
                raise ValueError(f"unknown feature site {site!r}; known: {', '.join(FEATURE_SITES)}")
            s_shapes = _shape_list(student_shapes, site, "student")
            t_shapes = _shape_list(teacher_shapes, site, "teacher")
            self.student_shapes[site], self.teacher_shapes[site] = s_shapes, t_shapes
            pairs = [
                (i, j)
                for i, j in pair_indices(len(s_shapes), len(t_shapes))
                if s_shapes[i][0] > 0 and t_shapes[j][0] > 0
            ]
            if not pairs:
                raise ValueError(f"feature site {site!r}: no student/teacher tensors to pair")
            self._pairs[site] = pairs
            for k, (i, j) in enumerate(pairs):
                c_s, c_t = s_shapes[i][0], t_shapes[j][0]
                layer = nn.Identity() if c_s == c_t else nn.Conv2d(c_s, c_t, kernel_size=1, bias=False)
                self.layers[self._key(site, k)] = layer

    @staticmethod
    def _key(site: str, index: int) -> str:
        return f"{site}_{index}"

    def pairs(self, site: str) -> list[tuple[int, int]]:
        """The ``(student_index, teacher_index)`` pairs of ``site``; pair ``k`` uses adapter ``k``."""
        try:
            return list(self._pairs[site])
        except KeyError:
            raise KeyError(f"no adapters for site {site!r}; built for: {', '.join(self.sites)}") from None

    def forward(self, site: str, index: int, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Student feature of pair ``index`` at ``site`` mapped to the teacher feature's channels and size."""
        key = self._key(site, index)
        if key not in self.layers:
            raise KeyError(f"no adapter for site {site!r} pair {index}")
        layer = self.layers[key]
        if isinstance(layer, nn.Conv2d) and student_feat.shape[1] != layer.in_channels:
            raise ValueError(
                f"adapter {key}: expected a student feature with {layer.in_channels} channels, "
                f"got {tuple(student_feat.shape)}"
            )
        if isinstance(layer, nn.Conv2d):
            # Match the (float32) weights so bf16/fp16 features work outside autocast too; under
            # autocast the conv still runs in low precision.
            out = layer(student_feat.to(layer.weight.dtype))
        else:
            out = layer(student_feat)
        if out.shape[1] != teacher_feat.shape[1]:
            raise ValueError(
                f"adapter {key}: maps to {out.shape[1]} channels but the teacher feature is "
                f"{tuple(teacher_feat.shape)}"
            )
        if out.shape[-2:] != teacher_feat.shape[-2:]:
            out = F.interpolate(out, size=teacher_feat.shape[-2:], mode="bilinear", align_corners=False)
        return out
