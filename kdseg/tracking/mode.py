"""Which W&B mode a run uses (online, offline, disabled): the config, the environment, a reachable server."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

MODES = ("online", "offline", "disabled")
_ENV_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}
DEFAULT_BASE_URL = "https://api.wandb.ai"
UNREACHABLE_MARKER = ".wandb_unreachable"  # in a sweep folder: skip the probe for this sweep
PROBE_TIMEOUT_S = 3.0
# ------------------------------------------------------------------------------------------ mode


def _base_url(env: Mapping[str, str]) -> str:
    return env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def api_key_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether a W&B API key is configured; the key itself is never returned or read further.

    Looks where ``wandb login`` and W&B's docs put one: ``WANDB_API_KEY``, the netrc file (``NETRC``,
    ``~/.netrc``, ``~/_netrc``) entry for the W&B host, and an ``api_key`` in W&B's settings files
    (``WANDB_CONFIG_DIR``/settings, ``./wandb/settings``). No network, no prompt.
    """
    import configparser
    import netrc

    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(_base_url(env)).hostname or "api.wandb.ai"
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    netrcs = [Path(env["NETRC"]).expanduser()] if env.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in netrcs:
        try:
            if path.is_file():
                auth = netrc.netrc(str(path)).authenticators(host)
                if auth and auth[2]:
                    return True
        except (OSError, netrc.NetrcParseError):
            continue
    config_dir = Path(env.get("WANDB_CONFIG_DIR") or home / ".config" / "wandb")
    for path in (config_dir / "settings", Path("wandb") / "settings"):
        try:
            parser = configparser.ConfigParser()
            if path.is_file() and parser.read(path) and parser.get("default", "api_key", fallback=""):
                return True
        except (OSError, configparser.Error):
            continue
    return False


def resolve_mode(config_mode: str = "auto", env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(mode, reason)``: the W&B mode a run uses, ``online``, ``offline`` or ``disabled``.

    ``tracking.wandb.mode: disabled`` always wins; then ``WANDB_DISABLED``/``WANDB_MODE`` from the
    environment; then the config. ``online`` (explicit or ``auto``) needs an API key, else offline.
    """
    env = os.environ if env is None else env
    if config_mode == "disabled":
        return "disabled", "tracking.wandb.mode is disabled"
    if str(env.get("WANDB_DISABLED", "")).lower() in ("1", "true", "yes"):
        return "disabled", "WANDB_DISABLED is set"
    env_mode = str(env.get("WANDB_MODE", "")).strip().lower()
    wanted, why = config_mode, f"tracking.wandb.mode is {config_mode}"
    if env_mode in _ENV_MODES:
        wanted, why = _ENV_MODES[env_mode], f"WANDB_MODE={env_mode}"
    if wanted in ("disabled", "offline"):
        return wanted, why
    if not api_key_configured(env):
        return "offline", "no W&B API key is configured"
    return "online", "a W&B API key is configured" if wanted == "auto" else why


def server_reachable(base_url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connect to the W&B server (no request, no credentials) within ``timeout`` seconds."""
    url = urlparse(base_url or _base_url(os.environ))
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _remember_unreachable(state_dir: Path | None, why: str) -> None:
    if state_dir is None:
        return
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / UNREACHABLE_MARKER).write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {why}\n")
    except OSError:
        pass


def _online_or_offline(state_dir: Path | None) -> tuple[str, str]:
    """Online mode was asked for: probe once (per sweep, via a marker file) and fall back to offline."""
    if state_dir is not None and (state_dir / UNREACHABLE_MARKER).exists():
        return "offline", "W&B was unreachable earlier in this sweep"
    if server_reachable():
        return "online", ""
    why = f"the W&B server ({_base_url(os.environ)}) is unreachable"
    _remember_unreachable(state_dir, why)
    return "offline", why
