"""``Cache.export``: a namespace written out as JSON Lines, atomically, mode 0600."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from .errors import CacheError
from .serializers import export_form

__all__ = ["export_jsonl"]


async def export_jsonl(
    items: AsyncIterator[tuple[str, Any]],
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``{"key": ..., "value": ...}`` per item to ``path``; the number written.

    Written through mkstemp's own descriptor (O_EXCL, 0600) and never reopened by name, so a
    symlink planted in its place is never followed; renamed only while the name is still that
    file. Nothing is left behind when the export fails.
    """
    target = Path(path)
    count = 0
    fd, tmp = tempfile.mkstemp(prefix=".export-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            out = anyio.wrap_file(handle)
            async for key, value in items:
                line = json.dumps({"key": key, "value": export_form(value)}, ensure_ascii=False)
                await out.write(line + "\n")
                count += 1
                if progress is not None:
                    progress(count)
            await out.flush()
            os.fchmod(fd, 0o600)
            await anyio.to_thread.run_sync(os.fsync, fd)
            written, named = os.fstat(fd), os.stat(tmp, follow_symlinks=False)
            if (written.st_dev, written.st_ino) != (named.st_dev, named.st_ino):
                raise CacheError(
                    "export: the file being written was replaced; export into a directory "
                    "only this user can write"
                )
        os.replace(tmp, target)
    except BaseException:
        await anyio.Path(tmp).unlink(missing_ok=True)
        raise
    return count
