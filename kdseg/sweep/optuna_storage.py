"""The Optuna storage of a sweep: where the study lives, opened safely, created once.

``storage:`` in the space file:
- ``null``: SQLite ``optuna.db`` in the sweep folder;
- any SQLAlchemy URL (``postgresql://user@host/db``, ``sqlite:////abs/path.db``);
- ``journal:PATH``: Optuna's journal file (good for NFS without a database server).

A database password never reaches a file: :class:`SecretFreeRDBStorage` pickles without it
(:mod:`kdseg.sweep.dburl` keeps it in memory). Two sweeps creating the schema of one fresh database
at once retry instead of failing; unreachable or malformed URLs are ConfigErrors. A new sweep's study
is checked (:func:`check_new_study`) before anything starts and created atomically
(:func:`create_new_study`).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import optuna

from kdseg.errors import ConfigError
from kdseg.layout import DEFAULT_DB
from kdseg.sweep.dburl import redact, scrub, strip_password, with_password


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The storage the sweep uses, as a string (``journal:PATH`` or an SQLAlchemy URL)."""
    if storage is None:
        return f"sqlite:///{(Path(sweep_dir) / DEFAULT_DB).resolve()}"
    return storage


def open_storage(url: str):
    """An Optuna storage object for ``url``; unreachable or malformed URLs are ConfigErrors."""

    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser().resolve()
        if not path.parent.is_dir():
            raise ConfigError(f"storage: journal folder {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"storage: {url!r} is neither an SQLAlchemy URL (dialect://...) nor journal:PATH")
    db_file = sqlite_file(url)
    if db_file is not None and not db_file.parent.is_dir():
        raise ConfigError(f"storage: {url}: folder {db_file.parent} does not exist")
    url = strip_password(url)  # the password stays in memory (kdseg.dburl), never in a pickle
    driver_url = strip_password(_driver_url(with_password(url)))
    for attempt in range(_SCHEMA_RACE_ATTEMPTS):
        try:
            return SecretFreeRDBStorage(driver_url, engine_kwargs=_engine_kwargs(url))
        except Exception as e:  # sqlalchemy raises many kinds; every one means "cannot use this storage"
            if _schema_race(e, url) and attempt + 1 < _SCHEMA_RACE_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            hint = "" if "password" not in first else _PASSWORD_HINT
            raise ConfigError(
                f"storage: cannot open {redact(with_password(url))}: {scrub(first, url)}{hint}"
            ) from None
    raise AssertionError("unreachable")


_PASSWORD_HINT = (
    " (kdseg never stores a database password: give it in PGPASSWORD or ~/.pgpass, or the full URL again "
    "with kdseg resume --storage URL)"
)


class SecretFreeRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose pickled state (Ray's tuner.pkl, the searcher state) holds no password.

    ``url`` is password-free; the password remembered by :mod:`kdseg.dburl` in this process is added
    only to the URL the engine connects with. Unpickled in another process, it connects without one
    (libpq then reads ``PGPASSWORD`` or ``~/.pgpass``).
    """

    def __init__(self, url: str, **kwargs):
        super().__init__(with_password(url), **kwargs)
        self.url = url

    def __setstate__(self, state: dict) -> None:
        clean = state["url"]
        super().__setstate__({**state, "url": with_password(clean)})
        self.url = clean


# --- database servers (PostgreSQL, MySQL) shared by several sweeps -------------------------------
# Optuna creates its tables on first use. Two sweeps opening a fresh database at the same moment
# race on CREATE TABLE / the version rows (PostgreSQL: UniqueViolation on pg_type, DuplicateTable);
# the loser retries and finds the schema in place.
_SCHEMA_RACE_ATTEMPTS = 6
CONNECT_TIMEOUT_S = 10  # an unreachable database server is an error after this long, never a hang


def _schema_race(err: BaseException, url: str) -> bool:
    import sqlalchemy.exc

    return not url.startswith("sqlite") and isinstance(
        err, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)
    )


def _driver_url(url: str) -> str:
    """``postgresql://`` (or Heroku's ``postgres://``) without a driver means psycopg 3, kdseg's dependency.

    SQLAlchemy 2.0 maps a bare ``postgresql://`` to psycopg2 and 2.1 to psycopg; naming the driver
    makes the URL work the same with both.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url.removeprefix(bare)
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    # fail fast on unreachable servers instead of hanging a sweep
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (``sqlite:////abs/x.db``, ``sqlite:///rel.db``); else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).expanduser().resolve()


def check_new_study(url: str, name: str) -> None:
    """Refuse a storage that cannot be used, or that holds a study ``name`` already; create nothing.

    A database server is connected to (Optuna creates its tables there, no study); an SQLite or
    journal file that does not exist yet is not created (it cannot hold a study), only its folder
    is checked.
    """
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser().resolve()
        if not path.parent.is_dir():
            raise ConfigError(f"storage: journal folder {path.parent} does not exist")
        if not path.exists():
            return
    elif (db_file := sqlite_file(url)) is not None:
        if not db_file.parent.is_dir():
            raise ConfigError(f"storage: {url}: folder {db_file.parent} does not exist")
        if not db_file.exists():
            return
    if study_exists(open_storage(url), name):
        raise _study_exists_error(url, name)


def _study_exists_error(url: str, name: str) -> ConfigError:
    return ConfigError(
        f"storage {redact(url)!r}: a study named {name!r} exists already; pass --name to start "
        f"another sweep, or resume the existing one"
    )


def create_new_study(url: str, name: str, modes: str | list[str]) -> None:
    """Create the study of a new sweep, atomically, or refuse as :func:`check_new_study` does.

    :func:`check_new_study` is a check before anything starts; two drivers of the same name on a shared
    storage may both pass it. Creating the study with ``load_if_exists=False`` leaves the decision to
    the storage (a unique study name): the loser gets Optuna's ``DuplicatedStudyError``, refused here.
    ``modes``: ``"max"``/``"min"`` or one per objective (the searcher then loads this study).
    """
    directions = [
        "maximize" if m == "max" else "minimize" for m in ([modes] if isinstance(modes, str) else modes)
    ]
    try:
        optuna.create_study(storage=open_storage(url), study_name=name, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        raise _study_exists_error(url, name) from None


def delete_study(url: str, name: str) -> None:
    """Delete study ``name`` (one this driver created for a sweep that then failed to start)."""
    optuna.delete_study(study_name=name, storage=open_storage(url))


def study_exists(storage, name: str) -> bool:

    return any(
        s.study_name == name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    )
