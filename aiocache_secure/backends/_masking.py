"""Credentials out of anything shown: the one helper every repr and message that can hold a URL
goes through.

:func:`mask_url` keeps what helps a reader (scheme, hosts, ports, path, option names) and replaces
what may be a secret with ``***``: the password of the userinfo (all of a userinfo without ``:``,
which some stores read as a token), and the value of every query or fragment option whose name
looks secret (``password``, ``sentinel_password``, ``token``, ``secret``, ``...key...``,
``auth...``). It errs towards masking: a URL it cannot split for sure (an ``@`` it cannot place, a
password with an unescaped ``/`` or ``?``) loses more, never less. :func:`mask_urls` does the
same to every URL inside a free text (an error message about to be printed).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

__all__ = ["MASK", "mask_url", "mask_urls"]

MASK: Final = "***"
_SECRET_NAME: Final = re.compile(r"pass|pwd|secret|token|key|auth|cred|sig", re.IGNORECASE)
_NOT_SECRET: Final = frozenset({"authsource", "authmechanism"})
_PARAM: Final = re.compile(r"([^&;=]*)(=?)([^&;]*)")
_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")


def _mask_params(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, eq, value = match.groups()
        plain = unquote(name)
        if eq and value and _SECRET_NAME.search(plain) and plain.lower() not in _NOT_SECRET:
            return f"{name}={MASK}"
        return match.group(0)

    return _PARAM.sub(one, text)


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    if not colon or any(c in user for c in "/?#@"):
        return MASK
    return f"{user}:{MASK}"


def mask_url(url: object) -> str:
    """``url`` fit for a repr, a log line or a message: credentials replaced by ``***``."""
    if not isinstance(url, str):
        return "<not a URL>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if not rest.startswith("/") and "@" in rest:
        # The last "@" ends the userinfo: a password may hold "@", "/" or "?" unescaped.
        userinfo, _, rest = rest.rpartition("@")
        rest = f"{_mask_userinfo(userinfo)}@{rest}"
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    masked = rest + qmark + _mask_params(query) + hash_ + _mask_params(fragment)
    return f"{scheme}{sep}{masked}"


def mask_urls(text: str) -> str:
    """``text`` with every ``scheme://...`` in it passed through :func:`mask_url`."""
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)
