"""The file backend's own guarantees: permissions, hostile keys, symlinks, crash leftovers,
corruption, per-namespace quotas and expiry sweeps."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aiocache_secure import MISSING, BackendUnavailable, CacheManager, Keyring, ManualClock
from aiocache_secure.backends import _file_dir
from aiocache_secure.backends.file import FileBackend, from_url
from aiocache_secure.errors import ConfigurationError

pytestmark = pytest.mark.anyio

TAG_A = "a" * 32
TAG_B = "b" * 32


def skey(tag: str, sep: bytes, rest: bytes) -> bytes:
    return b"acs1" + tag.encode("ascii") + sep + rest


def walk(root: Path) -> list[Path]:
    """Every non-directory under ``root`` (symlinks included, never followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        found += [Path(dirpath, n) for n in filenames]
        found += [Path(dirpath, n) for n in dirnames if Path(dirpath, n).is_symlink()]
    return found


def entries(root: Path) -> list[Path]:
    return [p for p in walk(root) if p.name[:1] in ("k", "h")]


def temps(root: Path) -> list[Path]:
    return [p for p in walk(root) if p.name.startswith(".t")]


def only_entry(root: Path) -> Path:
    (path,) = entries(root)
    return path


def url(path: Path) -> str:
    return "file://" + str(path)


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277])
async def test_modes_ignore_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "cache"
    old = os.umask(umask)
    try:
        backend = FileBackend(root)
        await backend.set(skey(TAG_A, b":", b"k"), b"v" * 100, ttl=None)
        await backend.set(b"raw key", b"w", ttl=30)
        assert await backend.get(b"raw key") == b"w"
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    dirs = [Path(d) for d, _, _ in os.walk(root)]
    assert len(dirs) == 5  # root, two namespace groups, one shard each
    for directory in dirs:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = entries(root)
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_group_readable_dir_is_refused_or_repaired(
    tmp_path: Path, audit_records: Callable[[], list[logging.LogRecord]]
) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o750)
    with pytest.raises(ConfigurationError, match="0750"):
        FileBackend(root)
    with pytest.raises(ConfigurationError):
        from_url(url(root), clock=ManualClock(), strict=False, max_entries=None,
                 max_bytes=None, on_evict=None)  # fmt: skip
    assert stat.S_IMODE(root.stat().st_mode) == 0o750
    assert not audit_records()

    backend = FileBackend(root, repair_permissions=True)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    (record,) = audit_records()
    assert "insecure_config" in record.getMessage()
    await backend.set(b"k", b"v", ttl=None)
    assert await backend.get(b"k") == b"v"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
async def test_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(ConfigurationError, match="another user"):
        FileBackend(root, repair_permissions=True)


async def test_missing_parents_are_created_0700(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "cache"
    old = os.umask(0o022)
    try:
        backend = FileBackend(root)
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", root):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    await backend.set(b"k", b"v", ttl=None)
    assert await backend.get(b"k") == b"v"


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757], ids=oct)
def test_a_parent_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(mode)
    for root in (parent / "cache", parent / "deeper" / "cache"):
        with pytest.raises(ConfigurationError, match="sticky bit.*chmod go-w") as info:
            FileBackend(root, repair_permissions=True)
        assert str(parent) in str(info.value)
        assert not root.exists() and not (parent / "deeper").exists()
    assert stat.S_IMODE(parent.stat().st_mode) == mode  # never "repaired" behind the owner


def test_a_sticky_world_writable_parent_is_accepted(tmp_path: Path) -> None:
    parent = tmp_path / "tmp-like"
    parent.mkdir()
    parent.chmod(0o1777)
    FileBackend(parent / "cache")
    assert stat.S_IMODE((parent / "cache").stat().st_mode) == 0o700


def test_a_parent_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    if os.geteuid() == 0:
        os.chown(parent, 65534, 65534)
    else:  # nobody to give it to: this process passes for another user instead
        monkeypatch.setattr(os, "geteuid", lambda: parent.stat().st_uid + 1)
    with pytest.raises(ConfigurationError, match="owned by another user"):
        FileBackend(parent / "cache", repair_permissions=True)
    assert not (parent / "cache").exists()


async def test_cache_path_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigurationError):
        FileBackend(tmp_path / "file")
    with pytest.raises(ConfigurationError):
        FileBackend("relative/dir")


@pytest.mark.parametrize(
    "bad",
    [
        "file://relative/dir",
        "file://host/abs/dir",
        "file://localhost/abs/dir",
        "file:///abs/dir?durable=1",
        "file:///abs/dir?",
        "file:///abs/dir#frag",
        "file:///abs/%00dir",
        "file:///abs/%ff",
        "file://",
        "file:relative",
    ],
)
def test_bad_urls(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        from_url(bad, clock=ManualClock(), strict=False, max_entries=None, max_bytes=None,
                 on_evict=None)  # fmt: skip


def test_percent_encoded_url(tmp_path: Path) -> None:
    backend = from_url(url(tmp_path / "my%20cache"), clock=ManualClock(), strict=False,
                       max_entries=None, max_bytes=None, on_evict=None)  # fmt: skip
    assert isinstance(backend, FileBackend)
    assert (tmp_path / "my cache").is_dir()


def test_bad_options(tmp_path: Path) -> None:
    for kwargs in (
        {"max_entries": 0},
        {"max_bytes": -1},
        {"max_entries": True},
        {"durable": "yes"},
        {"sweep_interval": 0},
        {"sweep_interval": float("inf")},
        {"temp_max_age": "1"},
    ):
        with pytest.raises(ConfigurationError):
            FileBackend(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_instances_share_directory_state(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    first = FileBackend(root)
    others = [FileBackend(root, max_entries=i + 1) for i in range(2000)]
    spelled = [FileBackend(str(root) + "/"), FileBackend(f"{root}/./")]
    assert all(b._dir is first._dir for b in others + spelled)
    assert "cache" not in repr(first) and str(tmp_path) not in repr(first)


# -- hostile keys, symlinks, FIFOs ------------------------------------------------------------

HOSTILE = [
    b"../x",
    b"../../../../etc/passwd",
    b"/etc/passwd",
    b"..\\..\\windows",
    b"x\x00y",
    b"\x00",
    b".",
    b"..",
    b"",
    b"a/b/c",
    b"\n\r\t",
    "ключ/✓".encode(),
    b"\xff\xfe",
    b"k" * 255,
    b"/" * 4096,
    b"." * 10_000,
]


async def test_hostile_raw_keys_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    backend = FileBackend(root)
    keys = HOSTILE + [skey(TAG_A, b"=", k) for k in HOSTILE]
    for i, key in enumerate(keys):
        await backend.set(key, b"%d" % i, ttl=None)
    assert await backend.get_many(keys) == [b"%d" % i for i in range(len(keys))]
    assert os.listdir(tmp_path) == ["cache"]
    files = walk(root)
    assert len(files) == len(keys)
    for path in files:
        assert path.resolve().is_relative_to(root.resolve())
        assert len(path.name) <= 201
        assert set(path.name) <= set("0123456789abcdefkh")
    exported = {k: v async for k, v in backend.scan(b"")}
    assert exported == {key: b"%d" % i for i, key in enumerate(keys)}
    assert await backend.delete_prefix(skey(TAG_A, b"=", b"")) == len(HOSTILE)
    assert await backend.get(HOSTILE[0]) == b"0"


async def test_hostile_keys_through_an_unhashed_namespace(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    async with CacheManager(keyring=Keyring.generate(), default_backend=url(root)) as manager:
        for encrypt in (False, True):
            ns = manager.namespace(f"plain-{encrypt}", hash_keys=False, encrypt=encrypt)
            keys = [k.decode("utf-8", "replace")[:4096] for k in HOSTILE]
            await ns.set_many({k: i for i, k in enumerate(keys)})
            assert await ns.get_many(keys) == [{k: i for i, k in enumerate(keys)}[k] for k in keys]
    assert os.listdir(tmp_path) == ["cache"]
    for path in walk(root):
        assert path.resolve().is_relative_to(root.resolve())


async def test_symlink_at_an_entry_is_never_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "cache", tmp_path / "outside"
    backend = FileBackend(root)
    key = skey(TAG_A, b":", b"victim")
    await backend.set(key, b"genuine", ttl=None)
    entry = only_entry(root)
    outside.write_bytes(entry.read_bytes())  # a valid entry: following the link would hit
    entry.unlink()
    entry.symlink_to(outside)
    assert await backend.get(key) is None
    assert [v async for v in backend.scan(b"")] == []
    await backend.set(key, b"new", ttl=None)
    assert not entry.is_symlink() and entry.is_file()
    assert b"new" not in outside.read_bytes()
    assert await backend.get(key) == b"new"


async def test_symlinked_shard_and_group_dirs_are_never_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "cache", tmp_path / "outside"
    backend = FileBackend(root)
    key = skey(TAG_A, b":", b"victim")
    await backend.set(key, b"genuine", ttl=None)
    shard = only_entry(root).parent
    shard.rename(outside)
    shard.symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    assert await backend.get(key) is None
    assert [v async for v in backend.scan(b"")] == []
    await backend.set(key, b"new", ttl=None)
    assert sorted(p.name for p in outside.iterdir()) == before
    assert not shard.is_symlink() and shard.is_dir()
    assert await backend.get(key) == b"new"

    group = shard.parent
    elsewhere = tmp_path / "elsewhere"
    group.rename(elsewhere)
    group.symlink_to(elsewhere, target_is_directory=True)
    assert await backend.get(key) is None
    assert await backend.delete_prefix(skey(TAG_A, b":", b"")) == 0
    await backend.set(key, b"newer", ttl=None)
    assert not group.is_symlink()
    assert entries(elsewhere) and all(b"newer" not in p.read_bytes() for p in entries(elsewhere))


async def test_fifo_at_an_entry_is_a_miss(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    backend = FileBackend(root)
    key = skey(TAG_A, b":", b"k")
    await backend.set(key, b"v", ttl=None)
    entry = only_entry(root)
    entry.unlink()
    os.mkfifo(entry)
    assert await backend.get(key) is None
    assert await backend.sweep() == 0
    await backend.set(key, b"w", ttl=None)
    assert await backend.get(key) == b"w"


# -- crash leftovers and corruption -------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_leftover_temp_files_are_cleaned_once(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    writer = FileBackend(root)
    await writer.set(skey(TAG_A, b":", b"k"), b"v", ttl=None)
    shard = only_entry(root).parent
    host = _file_dir.host_tag()
    dead = shard / f".t{host}-{_dead_pid()}-000000000001"
    live = shard / f".t{host}-{os.getppid()}-000000000002"
    mine = shard / f".t{host}-{os.getpid()}-000000000003"
    foreign_fresh = shard / ".t00000000-1-000000000004"
    foreign_old = shard / ".t00000000-1-000000000005"
    junk_old = shard / ".tjunk"
    for path in (dead, live, mine, foreign_fresh, foreign_old, junk_old):
        path.write_bytes(b"partial")
    for path in (foreign_old, junk_old):
        os.utime(path, (1, 1))
    assert await writer.get(skey(TAG_A, b":", b"k")) == b"v"
    assert len(temps(root)) == 6, "cleanup runs once per directory per process"
    del writer
    _file_dir.registry.clear()  # what a new process starts with

    restarted = FileBackend(root)
    assert await restarted.get(skey(TAG_A, b":", b"k")) == b"v"
    assert sorted(temps(root)) == sorted([live, mine, foreign_fresh])


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda d: b"",
    "short": lambda d: d[:10],
    "header only": lambda d: d[:28],
    "one byte short": lambda d: d[:-1],
    "one byte more": lambda d: d + b"x",
    "magic": lambda d: _flip(d, 0),
    "expiry": lambda d: _flip(d, 11),
    "key length": lambda d: _flip(d, 15),
    "value length": lambda d: _flip(d, 23),
    "crc": lambda d: _flip(d, 27),
    "key": lambda d: _flip(d, 30),
    "value": lambda d: _flip(d, len(d) - 5),
    "other key's entry": lambda d: d.replace(b"victim", b"victin"),
}


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
async def test_corrupted_entry_is_a_deleted_miss(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "cache"
    backend = FileBackend(root)
    key = skey(TAG_A, b"=", b"victim")
    await backend.set(key, b"value " * 20, ttl=None)
    entry = only_entry(root)
    entry.write_bytes(CORRUPTIONS[damage](entry.read_bytes()))
    assert await backend.get_many([key, key]) == [None, None]
    assert not entry.exists()
    await backend.set(key, b"again", ttl=None)
    entry.write_bytes(CORRUPTIONS[damage](entry.read_bytes()))
    assert [item async for item in backend.scan(b"")] == []
    assert await backend.sweep() == (0 if damage in ("value", "key", "crc", "other key's entry")
                                     else 1)  # fmt: skip


async def test_corrupted_entry_in_an_encrypted_namespace(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    async with CacheManager(keyring=Keyring.generate(), default_backend=url(root)) as manager:
        ns = manager.namespace("secret")
        await ns.set("k", {"a": 1})
        entry = only_entry(root)
        entry.write_bytes(entry.read_bytes()[:-3])
        assert await ns.get("k", MISSING) is MISSING
        assert ns.stats.misses == 1 and ns.stats.errors == 0


async def test_io_failure_is_backend_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    backend = FileBackend(root)
    await backend.set(b"k", b"v", ttl=None)
    root.rename(tmp_path / "moved")
    root.write_bytes(b"not a directory any more")
    with pytest.raises(BackendUnavailable) as info:
        await backend.get(b"k")
    assert str(info.value) == "file backend: I/O failed (ENOTDIR)"
    with pytest.raises(BackendUnavailable):
        await backend.set(b"k", b"v", ttl=None)


async def test_missing_root_is_recreated(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    backend = FileBackend(root)
    await backend.set(b"k", b"v", ttl=None)
    (tmp_path / "cache").rename(tmp_path / "gone")
    assert await backend.get(b"k") is None
    await backend.set(b"k", b"w", ttl=None)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert await backend.get(b"k") == b"w"


@pytest.mark.parametrize("swapped", ["root", "parent"])
async def test_root_swapped_for_a_symlink_is_never_written_through(
    tmp_path: Path, swapped: str
) -> None:
    root = tmp_path / "p" / "cache"
    backend = FileBackend(root)
    await backend.set(b"k", b"v", ttl=None)
    decoy = tmp_path / "decoy" / "p" / "cache"
    decoy.mkdir(parents=True, mode=0o700)
    moved = root if swapped == "root" else root.parent
    moved.rename(moved.with_name("moved"))
    moved.symlink_to(decoy if swapped == "root" else decoy.parent, target_is_directory=True)
    with pytest.raises(BackendUnavailable):
        await backend.get(b"k")
    with pytest.raises(BackendUnavailable):
        await backend.set(b"k2", b"w", ttl=None)
    assert walk(decoy) == []  # nothing read from or written to where the symlink points
    assert len(entries(tmp_path / ("p/moved" if swapped == "root" else "moved/cache"))) == 1


async def test_root_recreated_by_another_process_is_adopted(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    backend = FileBackend(root)
    await backend.set(b"k", b"v", ttl=None)
    root.rename(tmp_path / "old")
    root.mkdir(mode=0o700)
    assert await backend.get(b"k") is None
    await backend.set(b"k", b"w", ttl=None)
    assert len(entries(root)) == 1 and await backend.get(b"k") == b"w"


# -- namespaces, quotas, expiry ----------------------------------------------------------------


async def test_delete_prefix_clears_one_namespace_only(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "cache")
    keys = {
        "a:": [skey(TAG_A, b":", b"%d" % i) for i in range(10)],
        "a=": [skey(TAG_A, b"=", b"user:%d" % i) for i in range(5)]
        + [skey(TAG_A, b"=", b"x" * 200), skey(TAG_A, b"=", b"other")],
        "a!": [skey(TAG_A, b"!", b"vault")],
        "b:": [skey(TAG_B, b":", b"%d" % i) for i in range(10)],
        "raw": [b"acs1", b"acs1" + TAG_A.encode(), b"plain"],
    }
    everything = [k for group in keys.values() for k in group]
    await backend.set_many([(k, k) for k in everything], ttl=None)
    assert await backend.delete_prefix(skey(TAG_A, b":", b"")) == 10
    assert await backend.delete_prefix(skey(TAG_A, b"=", b"user:")) == 5
    assert await backend.delete_prefix(skey(TAG_A, b"=", b"x" * 150)) == 1
    left = {k async for k, _ in backend.scan(b"")}
    assert left == {skey(TAG_A, b"=", b"other"), *keys["a!"], *keys["b:"], *keys["raw"]}
    assert await backend.delete_prefix(b"acs1" + TAG_A.encode()) == 3  # other, vault, raw key
    assert {k async for k, _ in backend.scan(b"")} == {*keys["b:"], b"acs1", b"plain"}
    assert await backend.get_many(keys["b:"]) == keys["b:"]


async def test_scan_streams_and_filters(tmp_path: Path) -> None:
    clock = ManualClock()
    backend = FileBackend(tmp_path / "cache", clock=clock)
    mine = {skey(TAG_A, b"=", b"%04d" % i + b"." * (i % 3) * 100): b"v%d" % i for i in range(600)}
    await backend.set_many(list(mine.items()), ttl=None)
    await backend.set(skey(TAG_A, b"=", b"short-lived"), b"x", ttl=5)
    await backend.set(skey(TAG_B, b"=", b"0001"), b"theirs", ttl=None)
    clock.advance(6)
    assert {k: v async for k, v in backend.scan(skey(TAG_A, b"=", b""))} == mine
    assert {k async for k, _ in backend.scan(skey(TAG_A, b"=", b"000"))} == {
        k for k in mine if k.startswith(skey(TAG_A, b"=", b"000"))
    }


async def test_quotas_evict_lru_within_one_namespace(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    async with CacheManager(keyring=Keyring.generate(), default_backend=url(root)) as manager:
        small = manager.namespace("small", max_entries=3)
        big = manager.namespace("big")
        await big.set_many({f"b{i}": i for i in range(20)})
        for name in ("a", "b", "c"):
            await small.set(name, name)
        assert await small.get("a") == "a"  # a is now more recent than b and c
        await small.set("d", "d")
        assert await small.get_many(["a", "b", "c", "d"], default=MISSING) == [
            "a", MISSING, "c", "d"
        ]  # fmt: skip
        assert small.stats.evictions == 1
        for i in range(50):
            await small.set(f"more{i}", i)
        assert await big.get_many([f"b{i}" for i in range(20)]) == list(range(20))
        assert big.stats.evictions == 0
        assert small.stats.evictions == 51
    assert len(entries(root)) == 20 + 3


async def test_byte_quota_stays_near_its_limit(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    evicted: list[int] = []
    backend = FileBackend(root, max_bytes=200_000, on_evict=evicted.append, fsync=False)
    other = FileBackend(root)
    await other.set(skey(TAG_B, b":", b"keep"), b"x" * 150_000, ttl=None)
    worst = 0
    for i in range(150):
        await backend.set(skey(TAG_A, b":", b"%d" % i), os.urandom(3000 + i * 13), ttl=None)
        worst = max(worst, sum(p.stat().st_size for p in entries(root / f"{TAG_A}.3a")))
    assert 180_000 < worst <= 1.25 * 200_000
    assert sum(evicted) == backend.evictions > 0
    assert await other.get(skey(TAG_B, b":", b"keep")) == b"x" * 150_000
    await backend.set(skey(TAG_A, b":", b"huge"), b"x" * 300_000, ttl=None)
    assert await backend.get(skey(TAG_A, b":", b"huge")) is None


async def test_entry_quota_under_sustained_writes(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    backend = FileBackend(root, max_entries=100, fsync=False)
    worst = 0
    for batch in range(40):
        await backend.set_many(
            [(skey(TAG_A, b":", b"%d-%d" % (batch, i)), b"v") for i in range(25)], ttl=None
        )
        worst = max(worst, len(entries(root)))
    assert 100 <= worst <= 125
    assert len(entries(root)) <= 125


async def test_expiry_lazy_and_swept(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    clock = ManualClock()
    backend = FileBackend(root, clock=clock, sweep_interval=60)
    short = [skey(TAG_A, b":", b"s%d" % i) for i in range(30)]
    forever = [skey(TAG_B, b":", b"f%d" % i) for i in range(5)]
    await backend.set_many([(k, b"v") for k in short], ttl=10)
    await backend.set_many([(k, b"v") for k in forever], ttl=None)
    clock.advance(11)
    assert await backend.get(short[0]) is None  # lazy: an expired read deletes its file
    assert len(entries(root)) == 34
    await backend.set(b"unrelated", b"v", ttl=None)
    assert len(entries(root)) == 35, "no sweep before sweep_interval"
    clock.advance(60)
    await backend.set(b"unrelated", b"v", ttl=None)
    assert len(entries(root)) == 6
    await backend.set_many([(k, b"v") for k in short], ttl=1)
    clock.advance(2)
    assert await backend.sweep() == 30
    assert await backend.get_many(forever) == [b"v"] * 5


async def test_ttl_zero_and_options(tmp_path: Path) -> None:
    for kwargs in ({"durable": True}, {"fsync": False}):
        backend = FileBackend(tmp_path / str(kwargs), **kwargs)  # type: ignore[arg-type]
        await backend.set(b"k", b"v", ttl=None)
        assert await backend.get(b"k") == b"v"
        await backend.set(b"k", b"v", ttl=0)
        assert await backend.get(b"k") is None
        assert await backend.delete(b"k") is False
        await backend.set(b"k", b"v", ttl=None)
        assert await backend.delete(b"k") is True
        await backend.aclose()
        await backend.aclose()


async def test_private_namespace_clear_keeps_vault_and_erase_shreds(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    async with CacheManager(keyring=Keyring.generate(), default_backend=url(root)) as manager:
        private = manager.namespace("user:42", private=True)
        neighbour = manager.namespace("user:43", private=True)
        await private.set_many({"a": 1, "b": 2})
        await neighbour.set("a", "kept")
        assert len(entries(root)) == 2 + 1 + 2  # entries + two vault records
        assert len(os.listdir(root)) == 4  # entries and vault record of each namespace
        assert await private.clear() == 2
        assert len(entries(root)) == 1 + 2
        assert len(os.listdir(root)) == 3  # the cleared entries' directory is gone
        await private.set("c", 3)
        assert await manager.erase("user:42") is True
        assert len(entries(root)) == 1 + 1
        assert len(os.listdir(root)) == 2  # nothing of the erased namespace is left
        assert await private.get("c", MISSING) is MISSING
        assert await neighbour.get("a") == "kept"


async def test_many_namespaces_share_one_root_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    checked: list[str] = []
    real = _file_dir.prepare_root

    def counting(path: str, *, repair: bool) -> tuple[str, int]:
        checked.append(path)
        return real(path, repair=repair)

    monkeypatch.setattr(_file_dir, "prepare_root", counting)
    backends = [FileBackend(root, max_entries=10) for _ in range(10_000)]
    async with CacheManager(keyring=Keyring.generate(), default_backend=url(root)) as manager:
        spaces = [manager.namespace(f"tenant-{i}", max_entries=5) for i in range(500)]
        assert len(checked) == 1
        assert len({id(b._dir) for b in backends}) == 1
        assert os.listdir(root) == []  # nothing scanned or created before the first write
        await spaces[7].set("k", 1)
        assert len(os.listdir(root)) == 1
