"""The command line, run as a real subprocess (``python -m aiocache_secure``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from aiocache_secure import CacheError, CacheManager, Keyring

KEY_TEXT = Keyring.new_key_text()


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiocache_secure", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_help_on_every_command() -> None:
    for command in (
        "demo",
        "check-config",
        "stats",
        "export",
        "erase",
        "invalidate-tags",
        "rotate-keys",
        "gen-key",
        "bench",
    ):
        result = cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout


def test_gen_key_prints_and_writes_0600(tmp_path: Path) -> None:
    printed = cli("gen-key")
    assert printed.returncode == 0
    assert len(Keyring.from_text(printed.stdout)) == 1
    out = tmp_path / "k"
    written = cli("gen-key", "--out", str(out))
    assert written.returncode == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert cli("gen-key", "--out", str(out)).returncode != 0  # never overwrites


CORPUS = {
    "plain_redis_remote": (
        '[keys]\nenv = "K"\n[namespaces.a]\nbackend = "redis://10.1.2.3:6379/0"\nmax_value_bytes = 10\n',
        "plain redis:// to a non-loopback host",
    ),
    "plain_mongo_remote": (
        '[keys]\nenv = "K"\n[namespaces.a]\nbackend = "mongodb://db.example.com/app"\nmax_value_bytes = 10\n',
        "plain mongodb:// to a non-loopback host",
    ),
    "tls_insecure_mongo": (
        '[keys]\nenv = "K"\n[namespaces.a]\nbackend = "mongodb://127.0.0.1/app?tls=true&tlsInsecure=true"\nmax_value_bytes = 10\n',
        "verification is off",
    ),
    "tls_no_verify_redis": (
        '[keys]\nenv = "K"\n[namespaces.a]\nbackend = "rediss://cache.example.com:6380/0?ssl_cert_reqs=none"\nmax_value_bytes = 10\n',
        "verification is off",
    ),
    "unencrypted_shared": (
        '[keys]\nenv = "K"\n[namespaces.a]\nbackend = "redis://127.0.0.1:6379/0"\nencrypt = false\nserializer = "pickle"\nmax_value_bytes = 10\n',
        "encrypt = false",
    ),
    "key_in_file": (
        f'[keys]\nenv = "{KEY_TEXT}"\n[namespaces.a]\nmax_value_bytes = 10\n',
        "key material inside the configuration file",
    ),
    "no_key_source": (
        '[namespaces.a]\nbackend = "redis://127.0.0.1:6379/0"\nmax_value_bytes = 10\n',
        "no key source",
    ),
    "schema_unknown_option": ("[namespaces.a]\nttl = 5\nbogus = 1\n", "unknown option"),
    "schema_bad_ttl": ("[namespaces.a]\nttl = -5\n", "ttl"),
    "schema_bad_toml": ("[namespaces.a\n", "not valid TOML"),
    "bad_scheme": (
        '[manager]\ndefault_backend = "gopher://x"\n[namespaces.a]\nmax_value_bytes = 1\n',
        "unknown backend scheme",
    ),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_check_config_corpus(tmp_path: Path, case: str) -> None:
    text, expected = CORPUS[case]
    config = write(tmp_path / "c.toml", text)
    result = cli("check-config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout
    assert "ERROR" in result.stdout
    assert KEY_TEXT not in result.stdout + result.stderr
    as_json = cli("--json", "check-config", str(config))
    findings = json.loads(as_json.stdout)
    assert any(f["severity"] == "error" for f in findings)


def test_check_config_world_readable_key_file_and_cache_dir(tmp_path: Path) -> None:
    key_file = write(tmp_path / "keys", KEY_TEXT)
    key_file.chmod(0o644)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o755)
    cache_dir.chmod(0o755)
    config = write(
        tmp_path / "c.toml",
        f'[keys]\nfile = "{key_file}"\n[namespaces.a]\n'
        f'backend = "file://{cache_dir}"\nmax_value_bytes = 10\n',
    )
    result = cli("check-config", str(config))
    assert result.returncode == 1
    assert "key file is readable by group or others" in result.stdout
    assert "cache directory is accessible to group or others" in result.stdout


def test_check_config_warnings_only(tmp_path: Path) -> None:
    key_file = write(tmp_path / "keys", KEY_TEXT)
    key_file.chmod(0o600)
    config = write(
        tmp_path / "c.toml",
        f'[keys]\nfile = "{key_file}"\n[namespaces.a]\nttl = 5\n'
        '[namespaces.b]\nbackend = "redis://user:pw@127.0.0.1:6379/0"\nmax_value_bytes = 9\n',
    )
    result = cli("check-config", str(config))
    assert result.returncode == 0, result.stdout
    assert "WARNING" in result.stdout and "no max_value_bytes" in result.stdout
    assert "password inside the URL" in result.stdout
    assert "pw@" not in result.stdout


def test_erase_refuses_without_confirmation(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[namespaces.a]\nmax_value_bytes = 10\n")
    result = cli("--config", str(config), "erase", "a", stdin="")
    assert result.returncode == 2
    assert "--yes" in result.stderr


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    result = cli("--config", str(tmp_path / "nope.toml"), "stats")
    assert result.returncode == 2
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_operations_on_a_file_backend(tmp_path: Path) -> None:
    key_file = write(tmp_path / "keys", KEY_TEXT)
    key_file.chmod(0o600)
    cache = tmp_path / "cache"
    config = write(
        tmp_path / "c.toml",
        f'[keys]\nfile = "{key_file}"\n'
        f'[manager]\ndefault_backend = "file://{cache}"\n'
        "[namespaces.users]\nmax_value_bytes = 1000\n"
        '[namespaces."user:7"]\nprivate = true\nmax_value_bytes = 1000\n',
    )
    seed = (
        "import anyio\nfrom aiocache_secure.config import load_config\n"
        "async def main():\n"
        f"    cfg = load_config({str(config)!r})\n"
        "    async with cfg.manager() as m:\n"
        "        await m.namespace('users', max_value_bytes=1000).set_many({'a': 1, 'b': [2]})\n"
        "        await m.namespace('user:7', private=True, max_value_bytes=1000).set('email', 'x@y')\n"
        "        users = m.namespace('users', max_value_bytes=1000)\n"
        "        await users.get('a'); await users.get('zz')\n"
        "        assert await m.publish_stats() == 2\n"
        "anyio.run(main)\n"
    )
    subprocess.run([sys.executable, "-c", seed], check=True, timeout=60)
    base = ("--config", str(config))
    stats = json.loads(cli(*base, "--json", "stats").stdout)
    assert {r["namespace"]: r["entries"] for r in stats} == {"users": 2, "user:7": 1}
    counters = {r["namespace"]: r["counters"] for r in stats}
    assert counters["users"]["hits"] == 1 and counters["users"]["misses"] == 1
    assert counters["users"]["sets"] == 2 and counters["user:7"]["sets"] == 1
    assert "hits=1 misses=1" in cli(*base, "stats").stdout
    exported = cli(*base, "export", "users")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted((r["key"], r["value"]) for r in rows) == [("a", 1), ("b", [2])]
    out = tmp_path / "users.jsonl"
    assert cli(*base, "export", "users", "--out", str(out)).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert len(out.read_text().splitlines()) == 2
    rotated = cli(*base, "--json", "rotate-keys")
    assert rotated.returncode == 0, rotated.stderr
    erased = cli(*base, "--json", "erase", "user:7", "--yes")
    assert json.loads(erased.stdout) == [{"namespace": "user:7", "erased": True}]
    again = cli(*base, "erase", "user:7", "--yes")
    assert "nothing to erase" in again.stdout
    for result in (stats, exported, rotated, erased):
        assert KEY_TEXT not in json.dumps(result) if isinstance(result, list) else True
    assert KEY_TEXT not in exported.stdout + exported.stderr


def file_config(tmp_path: Path, namespaces: str) -> tuple[Path, Path]:
    """A configuration with a key file and a file backend under ``tmp_path``: (config, cache)."""
    key_file = write(tmp_path / "keys", KEY_TEXT)
    key_file.chmod(0o600)
    cache = tmp_path / "cache"
    text = f'[keys]\nfile = "{key_file}"\n[manager]\ndefault_backend = "file://{cache}"\n'
    return write(tmp_path / "c.toml", text + namespaces), cache


def test_invalidate_tags(tmp_path: Path) -> None:
    config, cache = file_config(tmp_path, "[namespaces.users]\nmax_value_bytes = 1000\n")
    script = (
        "import sys, anyio\nfrom aiocache_secure.config import load_config\n"
        "async def main(step):\n"
        f"    cfg = load_config({str(config)!r})\n"
        "    async with cfg.manager() as m:\n"
        "        users = m.namespace('users', max_value_bytes=1000)\n"
        "        if step == 'seed':\n"
        "            await users.set('p42', 1, tags=['user:42'])\n"
        "            await users.set('p7', 2, tags=['user:7'])\n"
        "            await m.namespace('side:1', private=True).set('s', 3, tags=['user:42'])\n"
        "        else:\n"
        "            side = m.namespace('side:1', private=True)\n"
        "            print(await users.get('p42'), await users.get('p7'), await side.get('s'))\n"
        "anyio.run(main, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, "seed"], check=True, timeout=60)
    base = ("--config", str(config))
    done = cli(*base, "--json", "invalidate-tags", "users", "user:42", "user:9")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"namespace": "users", "invalidated_tags": 2}]
    side = cli(
        *base, "invalidate-tags", "side:1", "user:42", "--backend", f"file://{cache}", "--private"
    )
    assert side.returncode == 0, side.stderr
    assert "invalidated 1 tag(s)" in side.stdout
    read = subprocess.run(
        [sys.executable, "-c", script, "read"], capture_output=True, text=True, timeout=60
    )
    assert read.stdout.split() == ["None", "2", "None"]
    for bad in (("users", ""), ("users", "x" * 300), ("nope", "t")):
        failed = cli(*base, "invalidate-tags", *bad)
        assert failed.returncode == 2
        assert failed.stderr.startswith("error: ") and failed.stderr.count("\n") == 1
        assert "x" * 300 not in failed.stderr and "Traceback" not in failed.stderr
    assert cli(*base, "invalidate-tags", "users").returncode == 2  # TAG... is required
    private_only = cli(*base, "invalidate-tags", "users", "t", "--private")
    assert private_only.returncode == 2 and "--backend" in private_only.stderr


def test_demo_runs(tmp_path: Path) -> None:
    result = cli("demo", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "plaintext visible: False" in result.stdout
    assert "stats.tampered = 1" in result.stdout
    assert "get email after erase = None" in result.stdout


@pytest.mark.anyio
async def test_export_never_follows_a_symlink_planted_for_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o644)
    real = tempfile.mkstemp

    def racing(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real(*args, **kwargs)
        os.unlink(name)  # the race another user of the directory would have to win
        os.symlink(victim, name)
        return fd, name

    out = tmp_path / "users.jsonl"
    async with CacheManager() as manager:
        users = manager.namespace("users", hash_keys=False)
        await users.set("a", 1)
        assert await users.export(out) == 1  # the normal path: written through its descriptor
        assert out.read_text() == '{"key": "a", "value": 1}\n'
        assert out.stat().st_mode & 0o777 == 0o600
        monkeypatch.setattr(tempfile, "mkstemp", racing)
        with pytest.raises(CacheError, match="replaced"):
            await users.export(out)
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o777 == 0o644
    assert out.read_text() == '{"key": "a", "value": 1}\n'  # the earlier export stands
    assert sorted(os.listdir(tmp_path)) == ["users.jsonl", "victim"]


def _file_config(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    key_file = write(tmp_path / "keys", KEY_TEXT)
    key_file.chmod(0o600)
    cache = tmp_path / "cache"
    config = write(
        tmp_path / "c.toml",
        f'[keys]\nfile = "{key_file}"\n[manager]\ndefault_backend = "file://{cache}"\n'
        "[namespaces.users]\nmax_value_bytes = 1000\n" + extra,
    )
    return config, cache


def _seed(config: Path, body: str) -> None:
    script = (
        "import anyio\nfrom aiocache_secure.config import load_config\n"
        "async def main():\n"
        f"    cfg = load_config({str(config)!r})\n"
        "    async with cfg.manager() as m:\n"
        + "".join(f"        {line}\n" for line in body.splitlines())
        + "anyio.run(main)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_json_is_accepted_after_the_command_and_honoured_everywhere(tmp_path: Path) -> None:
    config, _ = _file_config(tmp_path)
    after = cli("--config", str(config), "stats", "--json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)[0]["namespace"] == "users"
    config_after = cli("stats", "--config", str(config), "--json")
    assert json.loads(config_after.stdout)[0]["namespace"] == "users"
    key = json.loads(cli("gen-key", "--json").stdout)["key"]
    assert len(Keyring.from_text(key)) == 1
    bench = json.loads(cli("bench", "--seconds", "0.01", "--json").stdout)
    assert {row["operation"] for row in bench} == {"get hit", "get miss"}
    assert all(row["ns_per_op"] > 0 for row in bench)
    demo = cli("demo", "--json")
    assert demo.returncode == 2 and demo.stdout == ""
    assert demo.stderr.count("\n") == 1 and "--json" in demo.stderr


def test_failures_are_one_line_and_an_exit_code(tmp_path: Path) -> None:
    existing = write(tmp_path / "k", "x")
    result = cli("gen-key", "--out", str(existing))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already exists" in result.stderr
    assert existing.read_text() == "x"
    config = write(tmp_path / "c.toml", '[namespaces.a]\nbackend = "redis:/127.0.0.1"\n')
    bad_url = cli("check-config", str(config))
    assert "not a backend URL" in bad_url.stdout
    not_url = cli("--config", str(config), "stats")
    assert not_url.returncode == 2 and "not a backend URL" in not_url.stderr
    assert "Traceback" not in not_url.stderr


def test_unknown_namespace_is_the_same_error_for_export_and_erase(tmp_path: Path) -> None:
    config, _ = _file_config(tmp_path)
    exported = cli("--config", str(config), "export", "nobody")
    erased = cli("--config", str(config), "erase", "nobody", "--yes")
    assert exported.returncode == erased.returncode == 2
    assert "--backend" in exported.stderr and "--backend" in erased.stderr


def test_unreachable_backend_names_namespace_and_address(tmp_path: Path) -> None:
    from tests.servers import free_port

    port = free_port()
    config, _ = _file_config(
        tmp_path, f'[namespaces.sessions]\nbackend = "redis://app:hunter2@127.0.0.1:{port}/0"\n'
    )
    result = cli("--config", str(config), "stats")
    assert result.returncode == 2
    assert f"namespace 'sessions' at 127.0.0.1:{port}" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.slow
def test_export_to_a_closed_pipe_and_of_a_private_namespace_by_backend(tmp_path: Path) -> None:
    config, cache = _file_config(tmp_path)
    _seed(
        config,
        "users = m.namespace('users', max_value_bytes=1000)\n"
        "await users.set_many({f'user-{i}': 'x' * 200 for i in range(1500)})\n"
        "await m.namespace('user:9', private=True).set('email', 'nine@example.com')",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "aiocache_secure", "--config", str(config), "export", "users"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["value"] == "x" * 200
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "Broken pipe" not in stderr
    base = ("--config", str(config), "export", "user:9")
    refused = cli(*base)
    assert refused.returncode == 2
    found = cli(*base, "--backend", f"file://{cache}", "--private", "--progress")
    assert found.returncode == 0, found.stderr
    assert [json.loads(line) for line in found.stdout.splitlines()] == [
        {"key": "email", "value": "nine@example.com"}
    ]
    assert "export user:9: 1 entries, done" in found.stderr  # --progress without a terminal
