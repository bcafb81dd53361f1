"""``import segmentation_models_pytorch`` without the W&B import that comes with it.

smp imports timm, and ``timm.utils.summary`` runs ``try: import wandb`` at import time, only for timm's own
training scripts (kdseg never calls them). That import costs a trial 0.3 to 0.5 s of its cold start and a
few tens of MB even when its W&B is disabled. So kdseg imports smp once, here, with ``wandb`` hidden
(``sys.modules["wandb"] = None`` makes ``import wandb`` raise ImportError, which timm catches), and removes
the mark at once: kdseg's own tracking imports W&B when a run needs it. Nothing else runs in between (the
import happens in the caller's thread; a trial imports smp before it opens its W&B run).
``tests/test_private_api.py`` fails if a timm or smp upgrade imports W&B in spite of this.
"""

from __future__ import annotations

import sys
from types import ModuleType


def import_smp() -> ModuleType:
    """``segmentation_models_pytorch``, imported (once) without importing W&B."""
    mod = sys.modules.get("segmentation_models_pytorch")
    if mod is not None:
        return mod
    hide = "wandb" not in sys.modules
    if hide:
        sys.modules["wandb"] = None  # type: ignore[assignment]
    try:
        import segmentation_models_pytorch as mod
    finally:
        if hide and "wandb" in sys.modules and sys.modules["wandb"] is None:
            del sys.modules["wandb"]
    return mod
