"""The daemon's tables: a folder of `widthwise-table/1` and `/2` files kept in memory and watched.

Each `NAME.json` in the folder is one table of either format, loaded once and kept. A file replaced in the
folder (written elsewhere, then renamed in) is noticed by its (inode, size, mtime) on the
next access at least `check_interval` seconds after the previous check, and reloaded. A
broken file is reported with its error and leaves the other tables alone; a broken
replacement of a good table is refused, and the good one keeps serving beside the error.
A file that fails in any way (corrupt, non-finite numbers, unreadable) is an error entry of
its own, logged once per version, and never stops the store or the other tables.
With `background=True` (the daemon) files that change after the first scan are read and
parsed in a loader thread, so a large table never stalls the caller; the old version serves
meanwhile.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

from widthwise.device_agents.errors import clip_text

from .table import Table, TableError, load_table

logger = logging.getLogger("widthwise.daemon")

#: Files larger than this are refused without being read (a table is kilobytes).
MAX_TABLE_BYTES = 64 * 1024 * 1024

#: Status of a table entry as reported by /v1/tables.
STATUS_OK = "ok"            # the file on disk is loaded and serving
STATUS_STALE = "stale"      # the file on disk is broken; the previous good version serves
STATUS_ERROR = "error"      # the file on disk is broken and nothing good was ever loaded
STATUS_LOADING = "loading"  # a file that appeared while serving, not loaded yet


@dataclass(frozen=True)
class FileSignature:
    """What identifies one version of a file without reading it."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileSignature":
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


class SearcherCache:
    """Objects built per (table, objective), kept in least-recently-used order.

    Named objectives ("flops", "params") stay forever; inline ones are bounded so that
    a stream of distinct inline objectives cannot grow memory without limit.
    """

    def __init__(self, max_inline: int = 16) -> None:
        self._pinned: dict[Hashable, Any] = {}
        self._inline: OrderedDict[Hashable, Any] = OrderedDict()
        self._max_inline = max_inline
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, pinned: bool, build: Callable[[], Any]) -> Any:
        """The cached object for `key`, building it (outside the lock) on a miss."""
        with self._lock:
            if key in self._pinned:
                return self._pinned[key]
            if key in self._inline:
                self._inline.move_to_end(key)
                return self._inline[key]
        value = build()
        with self._lock:
            if pinned:
                return self._pinned.setdefault(key, value)
            existing = self._inline.get(key)
            if existing is not None:
                return existing
            self._inline[key] = value
            while len(self._inline) > self._max_inline:
                self._inline.popitem(last=False)
            return value

    def peek(self, key: Hashable) -> Any | None:
        """The cached object for `key` or None, without building or reordering (the hot path)."""
        value = self._pinned.get(key)
        return value if value is not None else self._inline.get(key)

    def __len__(self) -> int:
        return len(self._pinned) + len(self._inline)


@dataclass(frozen=True)
class LoadedTable:
    """One good version of a table file with its own caches; replaced whole on reload."""

    table: Table
    searchers: SearcherCache
    loaded_at: float


@dataclass
class TableEntry:
    """One table file: the version that serves, the state of the file on disk."""

    name: str
    path: Path
    signature: FileSignature | None = None
    version: LoadedTable | None = None
    error: str | None = None

    @property
    def table(self) -> Table | None:
        return self.version.table if self.version is not None else None

    @property
    def searchers(self) -> SearcherCache:
        if self.version is None:
            raise LookupError(f"table {self.name!r} has no loaded version")
        return self.version.searchers

    @property
    def loaded_at(self) -> float | None:
        return self.version.loaded_at if self.version is not None else None

    @property
    def status(self) -> str:
        if self.error is None:
            return STATUS_OK if self.version is not None else STATUS_LOADING
        return STATUS_STALE if self.table is not None else STATUS_ERROR

    def describe(self) -> dict:
        """The entry as /v1/tables shows it: identity, format, variables, provenance, fit quality, health."""
        out: dict[str, Any] = {
            "name": self.name,
            "file": self.path.name,
            "status": self.status,
            "error": self.error,
            "loaded_at": _iso(self.loaded_at),
        }
        version = self.version
        if version is not None:
            table = version.table
            out["format"] = table.format
            out["space"] = {
                "name": table.space_name,
                "resolution": table.space.get("resolution"),
                "variables": table.num_layers,
                "layers": table.num_layers,
                "names": list(table.variable_names),
                "choices": [list(c) for c in table.choices],
                "factors": len(table.factors),
            }
            out["device"] = table.device
            out["runtime"] = table.runtime
            out["fit"] = table.fit
            out["created"] = table.created
            out["objectives"] = _named_objectives(table)
        return out


class TableStore:
    """The tables of one folder, refreshed from disk at most every `check_interval` s."""

    def __init__(self, directory: str | os.PathLike, *, check_interval: float = 0.5,
                 max_inline_objectives: int = 16, background: bool = False) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise NotADirectoryError(f"tables folder {str(self.directory)!r} is not a directory")
        self.check_interval = float(check_interval)
        self._max_inline = max_inline_objectives
        self._entries: dict[str, TableEntry] = {}
        self._lock = threading.Lock()
        self._last_scan = float("-inf")
        self._pending: dict[str, FileSignature] = {}
        self._loader: threading.Thread | None = None
        self.background = False   # the first scan reads every file before the constructor returns
        self.refresh(force=True)
        self.background = background

    def load_in_background(self) -> None:
        """From now on, read changed files in a loader thread instead of in the caller."""
        self.background = True

    def refresh(self, force: bool = False) -> None:
        """Rescan the folder if the interval has passed (or `force`); reload changed files."""
        now = time.monotonic()
        if not force and now - self._last_scan < self.check_interval:
            return
        with self._lock:
            if not force and now - self._last_scan < self.check_interval:
                return
            self._scan()
            self._last_scan = time.monotonic()

    def get(self, name: str) -> TableEntry | None:
        """The entry for table `name` after a refresh due, or None when there is no such file."""
        self.refresh()
        return self._entries.get(name)

    def entries(self) -> list[TableEntry]:
        """Every table file of the folder, by name, after a refresh due."""
        self.refresh()
        return [self._entries[name] for name in sorted(self._entries)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    # --- internals ---------------------------------------------------------------------

    def _scan(self) -> None:
        try:
            listing = list(os.scandir(self.directory))
        except OSError:
            return   # the folder is unreadable for a moment: keep serving what we have
        seen: dict[str, tuple[Path, os.stat_result]] = {}
        for item in listing:
            if item.name.startswith(".") or not item.name.endswith(".json"):
                continue   # temporaries of atomic writers (".NAME.json.xyz") and other files
            try:
                st = item.stat()
            except OSError:
                continue   # removed between listing and stat
            if not stat.S_ISREG(st.st_mode):
                continue
            seen[table_name(item.name)] = (Path(item.path), st)
        for name in list(self._entries):
            if name not in seen:
                del self._entries[name]
        for name, (path, st) in seen.items():
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = TableEntry(name, path)
            signature = FileSignature.of(st)
            if signature == entry.signature or self._pending.get(name) == signature:
                continue
            if self.background:
                self._pending[name] = signature
            else:
                self._apply(entry, signature, self._read(entry.path, signature))
        if self._pending and (self._loader is None or not self._loader.is_alive()):
            self._loader = threading.Thread(target=self._load_pending, name="table-loader", daemon=True)
            self._loader.start()

    def _load_pending(self) -> None:
        """Loader thread: read every pending file (outside the lock), then publish each result."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                name, signature = next(iter(self._pending.items()))
                entry = self._entries.get(name)
            result = self._read(entry.path, signature) if entry is not None else None
            with self._lock:
                if self._pending.get(name) == signature:
                    del self._pending[name]
                    if entry is not None and self._entries.get(name) is entry:
                        self._apply(entry, signature, result)

    def _read(self, path: Path, signature: FileSignature) -> Table | str:
        """The table in `path`, or the error that refuses it (named by file and field, folder left out)."""
        if signature.size > MAX_TABLE_BYTES:
            return f"{path.name}: file: {signature.size} bytes, more than the {MAX_TABLE_BYTES} allowed"
        try:
            return load_table(path)
        except TableError as exc:
            return _short_error(exc, path)
        except Exception as exc:   # any failure of one file is that table's error, never the store's
            return f"{path.name}: {type(exc).__name__}: {clip_text(str(exc), 300)}"

    def _apply(self, entry: TableEntry, signature: FileSignature, result: Table | str | None) -> None:
        entry.signature = signature
        if isinstance(result, Table):
            entry.version = LoadedTable(result, SearcherCache(self._max_inline), time.time())
            entry.error = None
        elif result is not None:
            entry.error = result
            kept = "; the previous version keeps serving" if entry.version is not None else ""
            logger.warning("table %s refused: %s%s", entry.name, result, kept)


def table_name(path: str | os.PathLike) -> str:
    """The name a table file is served under: its file name without `.json` (the CLI's `--json` uses it too)."""
    name = Path(path).name
    return name[: -len(".json")] if name.endswith(".json") else name


def _short_error(exc: TableError, path: Path) -> str:
    """The table error with the folder left out: the daemon does not publish its paths."""
    return f"{path.name}: {clip_text(exc.field, 200)}: {clip_text(exc.problem, 300)}"


def _named_objectives(table: Table) -> list[str]:
    """The named objectives the table's counts allow."""
    return [name for name, key in (("flops", "macs"), ("params", "params")) if table.has_counts(key)]


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
