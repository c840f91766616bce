"""Fixtures of the file backend: a fresh private directory per test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return "file://" + str(tmp_path / "cache")
