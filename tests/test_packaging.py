"""What a user installs: the built sdist and wheel, their metadata, and the README's quickstart
run from a fresh virtual environment with nothing but the wheel and its ``[redis]`` extra."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _metadata(wheel: Path) -> tuple[list[str], object]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return names, Parser().parsestr(archive.read(meta).decode())


@pytest.mark.slow
def test_twine_accepts_both_distributions(dist: dict[str, Path]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "twine",
            "check",
            "--strict",
            str(dist["wheel"]),
            str(dist["sdist"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


@pytest.mark.slow
def test_wheel_metadata_and_files(dist: dict[str, Path]) -> None:
    names, meta = _metadata(dist["wheel"])
    assert "aiocache_secure/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert meta["License-Expression"] == "MIT"  # type: ignore[index]
    classifiers = meta.get_all("Classifier")  # type: ignore[attr-defined]
    assert "Typing :: Typed" in classifiers and "Framework :: AsyncIO" in classifiers
    extras = set(meta.get_all("Provides-Extra"))  # type: ignore[attr-defined]
    assert {"redis", "mongo", "fastapi", "starlette", "aiohttp", "web"} <= extras
    assert "dev" not in extras  # development tools are a dependency group, not published
    requires = " ".join(meta.get_all("Requires-Dist"))  # type: ignore[attr-defined]
    assert "nx-27017" not in requires and "pytest" not in requires
    fastapi_only = [r for r in meta.get_all("Requires-Dist") if 'extra == "fastapi"' in r]  # type: ignore[attr-defined]
    assert fastapi_only and not any("aiohttp" in r for r in fastapi_only)


@pytest.mark.slow
def test_sdist_carries_the_docs_and_examples(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "SECURITY.md",
        "CHANGELOG.md",
        "README.md",
        "mkdocs.yml",
        "docs/index.md",
        "docs/security.md",
        "examples/fastapi_app.py",
        "aiocache_secure/py.typed",
    ):
        assert needed in names, needed


def _quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Install and quickstart") :]
    install = re.search(r"```bash\n(pip install [^\n#]+)", section)
    assert install is not None and '"aiocache_secure[redis]"' in install.group(1)
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1)


@pytest.mark.slow
def test_wheel_installs_and_runs_the_readme_quickstart(
    dist: dict[str, Path], tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"{dist['wheel']}[redis]",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    script = tmp_path / "quickstart.py"
    script.write_text(_quickstart())
    result = subprocess.run(
        [str(python), str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok Stats(hits=1, misses=1, sets=1")
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import aiocache_secure, redis.asyncio; print(aiocache_secure.__file__)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert str(env_dir) in probe.stdout  # the wheel, not the checkout
