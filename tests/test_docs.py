"""The documentation: every public name has a docstring (the API reference is built from them),
and the configuration reference's example is a configuration the loader accepts."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from aiocache_secure import AtomicBackend
from aiocache_secure.config import load_config

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [
    "aiocache_secure",
    "aiocache_secure.keys",
    "aiocache_secure.errors",
    "aiocache_secure.config",
    "aiocache_secure.ratelimit",
    "aiocache_secure.metrics",
    "aiocache_secure.metrics.otel",
    "aiocache_secure.testing",
    "aiocache_secure.integrations.asgi",
    "aiocache_secure.integrations.fastapi",
    "aiocache_secure.integrations.aiohttp",
    "aiocache_secure.integrations.ratelimit_fastapi",
    "aiocache_secure.integrations.ratelimit_aiohttp",
]


def _undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = [] if (module.__doc__ or "").strip() else [module_name]
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if inspect.isclass(obj):
            if obj.__doc__ is None or not obj.__doc__.strip():
                missing.append(f"{module_name}.{name}")
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                target = member.fget if isinstance(member, property) else member
                target = getattr(target, "__func__", target)
                if not callable(target):
                    continue
                doc = (
                    inspect.getdoc(getattr(obj, attr))
                    if not isinstance(member, property)
                    else target.__doc__
                )
                if not doc and hasattr(AtomicBackend, attr):
                    doc = inspect.getdoc(getattr(AtomicBackend, attr))  # a protocol method
                if not (doc or "").strip():
                    missing.append(f"{module_name}.{name}.{attr}")
        elif not (inspect.getdoc(obj) or "").strip():
            missing.append(f"{module_name}.{name}")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    assert _undocumented(module_name) == []


def test_every_public_module_is_in_the_api_reference() -> None:
    reference = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    for module_name in PUBLIC_MODULES:
        assert f"::: {module_name}" in reference, module_name


def test_configuration_reference_example_loads(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    example = re.search(r"```toml\n(.*?)```", page, re.S)
    assert example is not None
    path = tmp_path / "app.toml"
    path.write_text(example.group(1))
    config = load_config(path)
    assert config.keys_env == "AIOCACHE_SECURE_KEYS"
    assert [ns.name for ns in config.namespaces] == ["users", "user:42"]
    assert config.namespace_config("user:42").options["private"] is True


def test_configuration_errors_name_the_file_and_table(tmp_path: Path) -> None:
    from aiocache_secure import ConfigurationError

    path = tmp_path / "bad.toml"
    path.write_text('[namespaces.users]\nttl = "soon"\nbackend = "redis://u:hunter2@127.0.0.1/0"\n')
    with pytest.raises(ConfigurationError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and "[namespaces.users]" in message
    assert "hunter2" not in message and "soon" not in message


EXAMPLE_PAGES = ("values.md", "testing.md")


def _examples(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "asyncio.run(main())" in b]


@pytest.mark.parametrize(
    ("page", "index"), [(page, i) for page in EXAMPLE_PAGES for i in range(len(_examples(page)))]
)
def test_guide_examples_run(page: str, index: int) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", _examples(page)[index]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_guide_has_runnable_examples(page: str) -> None:
    assert _examples(page)
