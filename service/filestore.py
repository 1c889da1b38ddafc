"""Translated files waiting to be downloaded: stored under names the server makes, deleted when they expire.

A stored name is ``<32 hex digits>.<download name>``: 128 random bits (the name is the only credential a
download needs, as a LibreTranslate ``translatedFileUrl`` is) and a download name built from the client's file
name reduced to ``A-Za-z0-9_-`` (so nothing the client chose reaches the filesystem unchecked), the target
language and the extension. ``read`` accepts only names of that exact shape; anything else is ``InvalidName``.

Without a configured folder, a private one (mode 0700) is made under $TMPDIR when the first file is stored and
removed by ``close``. Files older than ``ttl_s`` are deleted by ``sweep`` (``run_sweeper`` calls it
periodically) and are never served, swept or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import unicodedata
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

_NAME = re.compile(r"[0-9a-f]{32}\.[A-Za-z0-9_-]{1,80}\.(txt|html|srt|docx|odt)")
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial")
MAX_STEM_CHARS = 64


class InvalidName(ValueError):
    """Not a name this store makes."""


def download_name(filename: str, target: str, extension: str) -> str:
    """``Bericht (final).docx``, ``en`` -> ``Bericht_final_en.docx``: ASCII letters, digits, ``_`` and ``-`` only."""
    stem = PurePosixPath(filename.replace("\\", "/")).name
    if stem.lower().endswith(extension.lower()):
        stem = stem[: -len(extension)]
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:MAX_STEM_CHARS] or "file"
    target = re.sub(r"[^A-Za-z0-9-]+", "", target)[:16] or "translated"
    return f"{stem}_{target}{extension.lower()}"


class FileStore:
    def __init__(self, directory: Path | None, ttl_s: float) -> None:
        self.configured = directory
        self.ttl_s = ttl_s
        self._directory: Path | None = None
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        """The folder, made when first needed (a private temporary one unless configured)."""
        with self._lock:
            if self._directory is None:
                if self.configured is None:
                    self._directory = Path(tempfile.mkdtemp(prefix="mt-files-"))
                else:
                    self.configured.mkdir(mode=0o700, parents=True, exist_ok=True)
                    self._directory = self.configured
            return self._directory

    def save(self, data: bytes, name: str) -> str:
        """Store ``data``; returns the stored name ``<token>.<name>`` (``name`` from ``download_name``)."""
        stored = f"{secrets.token_hex(16)}.{name}"
        if not _NAME.fullmatch(stored):
            raise InvalidName(f"not a download name: {name!r}")
        partial = self.directory / f".{secrets.token_hex(16)}.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(partial, self.directory / stored)
        return stored

    def read(self, stored: str) -> tuple[bytes, str] | None:
        """(content, download name) of a stored file, None when it is gone or expired; ``InvalidName`` for a name
        this store never makes (checked before the filesystem is touched)."""
        if not _NAME.fullmatch(stored):
            raise InvalidName(stored)
        if self._directory is None and self.configured is None:
            return None  # nothing was ever stored
        path = self.directory / stored
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a symlink planted here is not followed
        except OSError:  # gone, or not a plain file
            return None
        with os.fdopen(descriptor, "rb") as file:
            status = os.fstat(file.fileno())
            if stat.S_ISREG(status.st_mode) and not self._expired(status.st_mtime):
                return file.read(), stored.split(".", 1)[1]
        with contextlib.suppress(OSError):
            path.unlink()  # expired: gone now, whether or not the sweeper came by
        return None

    def sweep(self) -> int:
        """Delete the expired files (and leftovers of interrupted writes); returns how many."""
        if self._directory is None and self.configured is None:
            return 0
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if not (_NAME.fullmatch(entry.name) or _PARTIAL.fullmatch(entry.name)):
                    continue  # not ours (a configured folder may hold other files)
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False) and self._expired(entry.stat().st_mtime):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def _expired(self, modified: float) -> bool:
        return time.time() - modified > self.ttl_s

    async def run_sweeper(self) -> None:
        """Sweep every half TTL (at least every 10 minutes, at most every 0.1 s) until cancelled."""
        interval = min(600.0, max(0.1, self.ttl_s / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await asyncio.to_thread(self.sweep)
            except OSError:
                log.exception("could not sweep expired translated files")
            else:
                if removed:
                    log.info("expired translated files deleted", extra={"files": removed})

    def close(self) -> None:
        """Remove the private folder (a configured one keeps its unexpired files for the next start)."""
        with self._lock:
            if self._directory is not None and self.configured is None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None
