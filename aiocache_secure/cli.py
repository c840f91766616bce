"""The command line: ``python -m aiocache_secure`` / ``aiocache-secure``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

from .backends import mask_urls
from .cache import MISSING, Cache
from .config import Config, load_config
from .errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CacheError,
    ConfigurationError,
)
from .keyring import Keyring
from .lint import check_config
from .manager import CacheManager
from .serializers import export_form
from .tags import check_tags

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

        # An attacker with write access to the store rewrites the entry as a well-formed file
        # whose ciphertext has one bit flipped.
        store = manager.backend_of("sessions")
        async for storage_key, envelope in store.scan(sessions.key_prefix):
            await store.set(storage_key, envelope[:-1] + bytes([envelope[-1] ^ 1]), ttl=None)
        _say("an attacker flipped one bit of the stored entry ...")
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


async def _bench(seconds: float, say: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
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
                ns_per_op = elapsed / count * 1e9
                rows.append({"case": label, "operation": op, "ns_per_op": round(ns_per_op)})
                if say:
                    _say(f"{label:<28} {op:<9} {ns_per_op:8.0f} ns/op")
    return rows


async def _with_config(config: Config, work: Callable[[CacheManager], Awaitable[int]]) -> int:
    async with config.manager() as manager:
        for ns in config.namespaces:
            options = {k: v for k, v in ns.options.items() if k != "backend"}
            manager.namespace(ns.name, ns.options.get("backend"), **options)
        return await work(manager)


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], text: list[str]) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for line in text:
            print(line)


async def _stats(manager: CacheManager, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for name, cache in manager.namespaces.items():
        entries = size = 0
        with _naming(args, name):
            async for _, value in manager.backend_of(name).scan(cache.key_prefix):
                entries += 1
                size += len(value)
            counters = await manager.read_stats(name)
        rows.append(
            {
                "namespace": name,
                "entries": entries,
                "bytes": size,
                "encrypted": cache.policy.encrypt,
                "private": cache.policy.private,
                # Published by running applications (CacheManager.publish_stats), summed.
                "counters": counters,
            }
        )
    lines = []
    for r in rows:
        counters = r["counters"]
        activity = (
            "  "
            + " ".join(
                f"{k}={counters.get(k, 0)}"
                for k in ("hits", "misses", "sets", "evictions", "tampered", "errors")
            )
            if counters
            else "  (no published counters)"
        )
        lines.append(
            f"{r['namespace']:<30} {r['entries']:>8} entries {r['bytes']:>12} bytes"
            + ("  encrypted" if r["encrypted"] else "")
            + ("  private" if r["private"] else "")
            + activity
        )
    _emit(args, rows, lines)
    return 0


async def _export(manager: CacheManager, args: argparse.Namespace) -> int:
    cache = _target(manager, args)
    bar = _Bar(f"export {args.namespace}", enabled=not args.json, force=args.progress)
    with _naming(args, args.namespace):
        if args.out is not None:
            count = await cache.export(args.out, progress=bar)
            bar.done(count)
            _progress(f"exported {count} entries to {args.out}")
            return 0
        count = 0
        async for key, value in cache.items():
            print(json.dumps({"key": key, "value": export_form(value)}, ensure_ascii=False))
            count += 1
            bar(count)
    bar.done(count)
    _progress(f"exported {count} entries")
    return 0


async def _erase(manager: CacheManager, args: argparse.Namespace) -> int:
    known = args.namespace in manager.namespaces
    if not known and args.backend is None:
        _namespace(manager, args.namespace)  # the same error (and exit code) as export's
    backend = None if known else args.backend
    with _naming(args, args.namespace):
        erased = await manager.erase(args.namespace, backend=backend)
    rows = [{"namespace": args.namespace, "erased": erased}]
    _emit(args, rows, ["erased" if erased else "nothing to erase (no such namespace)"])
    return 0


async def _invalidate_tags(manager: CacheManager, args: argparse.Namespace) -> int:
    try:
        tags = check_tags(args.tags)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalidate-tags: {exc}") from None
    cache = _target(manager, args)
    with _naming(args, args.namespace):
        await cache.invalidate_tags(tags)
    rows = [{"namespace": args.namespace, "invalidated_tags": len(tags)}]
    _emit(args, rows, [f"invalidated {len(tags)} tag(s) in {args.namespace}"])
    return 0


async def _rotate(manager: CacheManager, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for name, cache in manager.namespaces.items():
        if not cache.policy.encrypt:
            continue
        bar = _Bar(f"re-encrypting {name}", enabled=not args.json, force=args.progress)
        with _naming(args, name):
            count = await cache.rotate_keys(progress=bar)
        bar.done(count)
        rows.append({"namespace": name, "reencrypted": count})
    rewrapped = await manager.rewrap()
    _emit(
        args,
        rows + [{"rewrapped_data_keys": rewrapped}],
        [
            *(f"{r['namespace']:<30} {r['reencrypted']:>8} entries re-encrypted" for r in rows),
            f"{rewrapped} private data key(s) re-wrapped",
        ],
    )
    return 0


def _target(manager: CacheManager, args: argparse.Namespace) -> Cache:
    """The namespace a command names: configured, or opened on ``--backend`` (``--private``)."""
    if args.namespace in manager.namespaces or args.backend is None:
        if args.private:
            raise ConfigurationError("--private goes with --backend")
        return _namespace(manager, args.namespace)
    return manager.namespace(args.namespace, args.backend, private=args.private)


def _namespace(manager: CacheManager, name: str) -> Cache:
    try:
        return manager.namespaces[name]
    except KeyError:
        raise ConfigurationError(
            "that namespace is not in the configuration (name its store with --backend URL)"
        ) from None


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _address(url: str) -> str:
    """Where a backend URL points, for error messages: host:port or a path, never credentials."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return parts.path or "?"
    if parts.scheme == "memory":
        return "process memory"
    hosts = parts.netloc.rpartition("@")[2]
    return hosts or "?"


@contextmanager
def _naming(args: argparse.Namespace, name: str) -> Iterator[None]:
    """Say which namespace and which store failed: an operator's first question."""
    try:
        yield
    except BackendError as exc:
        url = args.urls.get(name) or args.backend_url
        kind = BackendTimeout if isinstance(exc, BackendTimeout) else BackendUnavailable
        raise kind(f"namespace {name!r} at {_address(url)}: {exc}") from exc


class _Bar:
    """A one-line progress counter on a terminal's stderr; silent otherwise (scripts, --json)."""

    def __init__(self, label: str, *, enabled: bool, force: bool = False) -> None:
        self.label = label
        self.enabled = force or (enabled and sys.stderr.isatty())
        self.started = time.monotonic()

    def __call__(self, count: int) -> None:
        if self.enabled and count % 100 == 0:
            rate = count / max(time.monotonic() - self.started, 1e-9)
            sys.stderr.write(f"\r{self.label}: {count:,} entries ({rate:,.0f}/s)")
            sys.stderr.flush()

    def done(self, count: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{self.label}: {count:,} entries, done\n")
            sys.stderr.flush()


def _confirm(name: str) -> bool:
    if not sys.stdin.isatty():
        _progress("refusing to erase without --yes: no terminal to confirm on")
        return False
    answer = input(f"Erase namespace {name!r} and destroy its key? Type its name to confirm: ")
    return answer == name


def _gen_key(out: Path | None, *, as_json: bool) -> int:
    text = Keyring.new_key_text()
    if out is None:
        print(json.dumps({"key": text}) if as_json else text)
        return 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")
    if as_json:
        print(json.dumps({"written": str(out), "mode": "0600"}))
    else:
        _progress(f"wrote a new key to {out} (mode 0600)")
    return 0


def _check(args: argparse.Namespace) -> int:
    findings = check_config(args.file)
    if args.json:
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding)
        if not findings:
            print("no findings")
    return 1 if any(f.severity == "error" for f in findings) else 0


def _parser() -> argparse.ArgumentParser:
    # --config and --json are accepted before and after the command; after it, SUPPRESS keeps
    # an option that was not repeated from overwriting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML configuration (default: ./aiocache_secure.toml)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    parser = argparse.ArgumentParser(
        prog="aiocache-secure",
        description="aiocache_secure command line. Keys come from the configuration's [keys] "
        "source (environment variable or 0600 key file), never from the command line.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("aiocache_secure.toml"),
        help="TOML configuration (default: ./aiocache_secure.toml)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[common])

    demo = command("demo", "run the demo on the embedded default (no server needed)")
    demo.add_argument("--dir", type=Path, help="cache directory for the file backend part")
    check = command("check-config", "validate and lint a configuration file")
    check.add_argument("file", type=Path, help="the TOML file to check")
    command("stats", "entries and bytes per configured namespace")
    export = command("export", "export a namespace as JSON Lines")
    export.add_argument("namespace")
    export.add_argument("--out", type=Path, help="write atomically to FILE (mode 0600)")
    export.add_argument("--backend", help="backend URL of a namespace not in the configuration")
    export.add_argument(
        "--private", action="store_true", help="with --backend: the namespace is private"
    )
    export.add_argument("--progress", action="store_true", help="progress on stderr, always")
    erase = command("erase", "crypto-shred a namespace (destroy key, delete entries)")
    erase.add_argument("namespace")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase.add_argument("--backend", help="backend URL of a namespace not in the configuration")
    invalidate = command(
        "invalidate-tags", "turn every entry of a namespace carrying any of the tags into a miss"
    )
    invalidate.add_argument("namespace")
    invalidate.add_argument("tags", nargs="+", metavar="TAG")
    invalidate.add_argument("--backend", help="backend URL of a namespace not in the configuration")
    invalidate.add_argument(
        "--private", action="store_true", help="with --backend: the namespace is private"
    )
    rotate = command(
        "rotate-keys", "re-encrypt entries and re-wrap data keys under the keyring's primary key"
    )
    rotate.add_argument("--progress", action="store_true", help="progress on stderr, always")
    gen = command("gen-key", "print (or write, mode 0600) a fresh random key")
    gen.add_argument("--out", type=Path, help="write to a new file instead of printing")
    bench = command("bench", "a quick local benchmark on the memory backend")
    bench.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except CacheError as exc:
        _progress(f"error: {mask_urls(str(exc))}")
        return 2
    except FileExistsError:
        _progress("error: that file already exists (nothing was overwritten)")
        return 2
    except BrokenPipeError:
        # The reader went away (``export | head``): stop quietly, as a shell pipeline expects,
        # and keep the interpreter from reporting the pipe again while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        if args.json:
            raise ConfigurationError("demo is a walkthrough for people: it has no --json output")
        if args.dir is not None:
            anyio.run(_demo, args.dir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="aiocache-secure-demo-") as tmp:
                anyio.run(_demo, Path(tmp) / "cache")
        return 0
    if args.command == "gen-key":
        return _gen_key(args.out, as_json=args.json)
    if args.command == "bench":
        rows = anyio.run(_bench, args.seconds, not args.json)
        if args.json:
            print(json.dumps(rows, indent=2))
        return 0
    if args.command == "check-config":
        return _check(args)
    if args.command == "erase" and not args.yes and not _confirm(args.namespace):
        return 2
    config = load_config(args.config)
    args.urls = {
        ns.name: str(ns.options.get("backend", config.default_backend)) for ns in config.namespaces
    }
    args.backend_url = getattr(args, "backend", None) or config.default_backend
    commands = {
        "stats": _stats,
        "export": _export,
        "erase": _erase,
        "invalidate-tags": _invalidate_tags,
        "rotate-keys": _rotate,
    }
    command = commands[args.command]
    return anyio.run(_with_config, config, lambda manager: command(manager, args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
