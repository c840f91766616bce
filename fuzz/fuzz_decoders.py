"""atheris harness for the decoders that see stored bytes (run by hand, not in CI).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_decoders.py -max_total_time=600 -rss_limit_mb=2048

Feeds arbitrary bytes to the envelope decoder (``Encryption.open``), the entry-frame decoder, the
JSON (plain and tagged) and msgpack deserializers and the vault record parser. Documented outcomes
only: a decoded value, ``(None, reason)``, ``IntegrityError`` or ``SerializationError``; anything
else is a crash that atheris reports with the input that caused it.
"""

from __future__ import annotations

import os
import sys

import anyio
import atheris

with atheris.instrument_imports():
    from aiocache_secure import IntegrityError, SerializationError, frame
    from aiocache_secure.backends.memory import MemoryBackend
    from aiocache_secure.clock import ManualClock
    from aiocache_secure.keyring import Keyring
    from aiocache_secure.layers.encryption import Encryption, StaticKey
    from aiocache_secure.serializers import get_serializer
    from aiocache_secure.vault import Vault

KEYS = StaticKey()
KEYS.load(b"kid1", os.urandom(32))
ENC = Encryption(
    MemoryBackend(), keys=KEYS, namespace="fuzz", namespace_id=b"n" * 32, clock=ManualClock(),
    strict=False, on_tamper=lambda: None,
)
JSON, MSGPACK = get_serializer("json"), get_serializer("msgpack")
KEYRING = Keyring.generate()
STORE = MemoryBackend()
VAULT = Vault(STORE, lambda: KEYRING)
REASONS = {"malformed", "unknown_version", "unknown_key", "auth_failed", "replayed", "expired"}


async def vault_round(data: bytes) -> None:
    await STORE.set(Vault.record_key(b"t" * 32), data, ttl=None)
    try:
        await VAULT.load("fuzz", b"t" * 32, create=False)
    except IntegrityError:
        pass


def test_one(data: bytes) -> None:
    result, reason = ENC.open(b"storage-key", data)
    assert result is None and reason in REASONS
    try:
        frame.unpack(data)
    except IntegrityError:
        pass
    for serializer, payload in ((JSON, data), (JSON, b"\x01" + data), (MSGPACK, data)):
        try:
            serializer.loads(payload)  # b"\x01": the tagged scheme's decoder
        except SerializationError:
            pass
    anyio.run(vault_round, data)


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
