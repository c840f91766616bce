"""The keyspace: every spelling of a key this package writes to a store or to the memo.

In a store::

    "acs1" + tag + ":" + hex(PRF(namespace key, key))    an entry (hashed keys, the default)
    "acs1" + tag + "=" + key                             an entry (hash_keys=False)
    "acs1" + tag + "!vault"                              a private namespace's wrapped data key
    "acs1" + tag + "!stats:" + manager id                one manager's published counters
    "acs1!index"                                         a KMS-only manager's wrapped index key

In the verified-read memo (never written to a store, see :mod:`aiocache_secure.memo`)::

    "acs1" + tag + "#" + key                             a memoized storage key (HashedKeys)
    "acs1" + tag + "$" + key                             a verified entry (VerifiedReads)

The tag is 32 lowercase hex characters, keyed BLAKE2b of the namespace name (:func:`namespace_tag`),
so a name never reaches the store and two namespaces share a prefix only by a 128-bit collision.
Everything up to the separator byte after the tag is fixed-width, so no key or namespace name can
forge another namespace's prefix: isolation never hangs on a separator. ``acs1`` is the format
version; the PRF and the tag derivation are fixed in code for it, never chosen by stored data.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = [
    "FORMAT",
    "INDEX_RECORD",
    "NAMESPACED",
    "PREFIX_LEN",
    "TAG_LEN",
    "hashed_prefix",
    "key_memo_prefix",
    "namespace_prefix",
    "namespace_tag",
    "prefixed_prefix",
    "stats_prefix",
    "vault_record",
    "verified_memo_prefix",
]

FORMAT: Final = b"acs1"
TAG_LEN: Final = 32
# A namespace's keys up to and including the separator byte after the tag.
PREFIX_LEN: Final = len(FORMAT) + TAG_LEN + 1
# What starts every key of a namespace (the format and a tag).
NAMESPACED: Final = re.compile(re.escape(FORMAT) + b"[0-9a-f]{%d}" % TAG_LEN)
# Outside every namespace: a tag is hex, never "!".
INDEX_RECORD: Final = FORMAT + b"!index"


def namespace_tag(tag_key: bytes, name: str) -> bytes:
    digest = hashlib.blake2b(
        name.encode("utf-8"), key=tag_key, digest_size=TAG_LEN // 2, person=b"acs1-namespace"
    )
    return digest.hexdigest().encode("ascii")


def namespace_prefix(tag: bytes) -> bytes:
    """Every store and memo key of the namespace starts with this."""
    return FORMAT + tag


def hashed_prefix(tag: bytes) -> bytes:
    return FORMAT + tag + b":"


def prefixed_prefix(tag: bytes) -> bytes:
    return FORMAT + tag + b"="


def vault_record(tag: bytes) -> bytes:
    return FORMAT + tag + b"!vault"


def stats_prefix(tag: bytes) -> bytes:
    return FORMAT + tag + b"!stats:"


def key_memo_prefix(tag: bytes) -> bytes:
    return FORMAT + tag + b"#"


def verified_memo_prefix(tag: bytes) -> bytes:
    return FORMAT + tag + b"$"
