"""The command line: ``python -m aiocache_secure`` / ``aiocache-secure``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from .cache import MISSING
from .keyring import Keyring
from .manager import CacheManager

__all__ = ["main"]


def _say(text: str) -> None:
    print(text, flush=True)


def _entry_files(directory: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(directory.rglob("*")) if p.is_file()]


async def _demo(directory: Path) -> None:
    keyring = Keyring.generate()
    _say(f"keyring: {keyring!r}  (the repr shows key ids, never key material)")
    async with CacheManager(keyring=keyring) as manager:
        _say("\n-- memory:// namespace 'users' (keys hashed, values typed)")
        users = manager.namespace("users", ttl=300)
        await users.set("alice", {"plan": "pro"}, ttl=60)
        _say(f"set alice -> get alice = {await users.get('alice')!r}")
        _say(f"get bob (miss)        = {await users.get('bob')!r}")
        await users.set("carol", None)
        _say(f"a cached None is a hit: {await users.get('carol', default=MISSING)!r}")
        _say(f"ttl(alice) = {await users.ttl('alice'):.1f}s   stats = {users.stats}")

        url = f"file://{directory}"
        _say(f"\n-- file:// namespace 'sessions' in {directory} (encrypted by default)")
        sessions = manager.namespace("sessions", backend=url, ttl=3600)
        await sessions.set("session:42", {"user": "alice", "token": "s3cr3t-token"})
        files = await anyio.to_thread.run_sync(_entry_files, directory)
        for path, raw in files[:3]:
            _say(
                f"on disk: {path.relative_to(directory)}  ({len(raw)} bytes, "
                f"plaintext visible: {b's3cr3t' in raw or b'alice' in raw})"
            )
        _say(f"get session:42 = {await sessions.get('session:42')!r}")

        if files:
            target, raw = files[0]
            await anyio.Path(target).write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x01]))
            _say("flipped one bit of the entry file on disk ...")
            _say(
                f"get session:42 = {await sessions.get('session:42')!r}  "
                f"(tampered entries are misses; stats.tampered = {sessions.stats.tampered})"
            )

        _say("\n-- private namespace 'user:7' with its own data key, then erase (crypto-shredding)")
        private = manager.namespace("user:7", backend=url, private=True)
        await private.set_many({"email": "seven@example.com", "address": "7 Seventh St"})
        _say(f"export: {[item async for item in private.items()]!r}")
        _say(f"erase('user:7') -> {await manager.erase('user:7')}")
        _say(f"get email after erase = {await private.get('email')!r}")
    _say("\nmanager closed; every backend released.")


async def _bench(seconds: float) -> None:
    async with CacheManager(keyring=Keyring.generate()) as manager:
        for label, encrypt, pad in (
            ("memory, hashed keys", False, False),
            ("memory, hashed + encrypted", True, False),
            ("memory, padded", False, True),
        ):
            ns = manager.namespace(label.replace(",", ""), encrypt=encrypt, pad_timing=pad)
            await ns.set("hit", {"plan": "pro", "n": 1})
            for op, key in (("get hit", "hit"), ("get miss", "miss")):
                count, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    for _ in range(1000):
                        await ns.get(key)
                    count += 1000
                elapsed = time.perf_counter() - start
                _say(f"{label:<28} {op:<9} {elapsed / count * 1e9:8.0f} ns/op")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aiocache-secure", description="aiocache_secure command line"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo on the embedded default (no server needed)")
    demo.add_argument("--dir", type=Path, help="cache directory for the file backend demo")
    sub.add_parser("gen-key", help="print a fresh random key (base64) for a keyring")
    bench = sub.add_parser("bench", help="a quick local benchmark on the memory backend")
    bench.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.dir is not None:
            anyio.run(_demo, args.dir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="aiocache-secure-demo-") as tmp:
                anyio.run(_demo, Path(tmp) / "cache")
        return 0
    if args.command == "gen-key":
        print(Keyring.new_key_text())
        return 0
    if args.command == "bench":
        anyio.run(_bench, args.seconds)
        return 0
    parser.error("unknown command")  # pragma: no cover - argparse enforces the choices
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
