"""Database URLs without their passwords: what kdseg writes, pickles, logs and prints.

A storage URL may carry a password (``postgresql://user:PW@host/db``, ``...?password=PW``, either one
percent-encoded). kdseg keeps it in this process's memory only: :func:`strip_password` returns the URL
without it (what ``sweep.yaml``, Ray's pickles and every message hold) and remembers the password for
:func:`with_password`, which the storage calls when it connects. A later process (``kdseg resume``)
gets the password from the environment instead: ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads both
when the URL has none), or the full URL given again (``kdseg resume --storage URL``).

Parsing is SQLAlchemy's own (:func:`sqlalchemy.engine.make_url`), so every URL form it accepts is
covered; ``journal:PATH`` and other non-URLs pass through unchanged.
"""

from __future__ import annotations

_PASSWORDS: dict[str, str] = {}  # password-free URL -> the URL as given (this process only)
_SECRET_KEYS = ("password",)  # query parameters that carry a password (libpq, MySQL drivers)


def _parse(url: str):
    if "://" not in url:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def _without(u):
    from sqlalchemy.engine import URL

    clean = URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
    return clean.difference_update_query(_SECRET_KEYS)


def has_password(url: str) -> bool:
    u = _parse(url)
    return u is not None and (u.password is not None or any(k in u.query for k in _SECRET_KEYS))


def strip_password(url: str) -> str:
    """``url`` without its password (remembered in memory for :func:`with_password`)."""
    u = _parse(url)
    if u is None or not has_password(url):
        return url
    clean = _without(u).render_as_string(hide_password=False)
    _PASSWORDS[clean] = url
    return clean


def remember(url: str) -> str:
    """Keep the password of ``url`` for this process (e.g. given again to ``kdseg resume``); the clean URL."""
    return strip_password(url)


def with_password(clean: str) -> str:
    """The URL to connect with: ``clean`` plus the password remembered for it, if any."""
    return _PASSWORDS.get(clean, clean)


def redact(url: str) -> str:
    """``url`` for messages: the password shown as ``***`` (in the user part and in the query)."""
    if url is None:
        return url
    u = _parse(url)
    if u is None:
        if "://" in url and "@" in url:  # not parseable, but could still hold credentials
            return "(a storage URL that cannot be parsed)"
        return url
    hidden = {k: "***" for k in _SECRET_KEYS if k in u.query}
    if hidden:
        u = u.update_query_dict(hidden)
    return u.render_as_string(hide_password=True)


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same database (passwords ignored)."""
    ua, ub = _parse(a), _parse(b)
    if ua is None or ub is None:
        return a == b
    return _without(ua) == _without(ub)


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with the password of ``url`` replaced by ``***``."""
    u = _parse(_PASSWORDS.get(strip_password(url), url))
    if u is None:
        return text
    for secret in (u.password, *(u.query.get(k) for k in _SECRET_KEYS)):
        if isinstance(secret, str) and secret:
            text = text.replace(secret, "***")
    return text
