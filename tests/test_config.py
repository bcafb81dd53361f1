"""Config values as users type them: in YAML files and through --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdseg.config import load_config
from kdseg.errors import ConfigError

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart_synth.yaml"


def test_optimizer_in_backward_is_off_by_default_and_refused_with_grad_clip() -> None:
    assert load_config(QUICKSTART).train.optimizer_in_backward is False
    assert load_config(QUICKSTART, ["train.optimizer_in_backward=true"]).train.optimizer_in_backward
    with pytest.raises(ConfigError, match=r"train.*optimizer_in_backward needs no grad_clip"):
        load_config(QUICKSTART, ["train.optimizer_in_backward=true", "train.grad_clip=1.0"])


def test_amp_off_is_not_a_boolean(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `off` as false; `amp: off` must still mean mixed precision off."""
    assert load_config(QUICKSTART, ["train.amp=off"]).train.amp == "off"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(QUICKSTART.read_text().replace("amp: auto", "amp: off"))
    assert load_config(cfg).train.amp == "off"
    with pytest.raises(ConfigError, match=r"train\.amp: .*got True"):
        load_config(QUICKSTART, ["train.amp=on"])
