"""slimtvm's tuning database: MetaSchedule's JSON database in a folder, with an identity card.

Layout of ``DIR``:

- ``slimtvm-db.json``: what made the database (format, version, target). Written once,
  atomically, before any record.
- ``database_workload.json`` and ``database_tuning_record.json``: MetaSchedule's JSON database,
  one JSON document per line, appended as each measurement is committed.

- ``slimtvm-db.lock``: held by the one writer (``slimtvm tune``) while it runs (filelock).

Kill safety: TVM appends one line per record and flushes it, so a process killed at any moment
leaves every earlier line whole; at worst the last line is cut short. A torn last line (without
its newline and not valid JSON) is one measurement that was never committed: the writer cuts it
off when it opens the database (under its lock); a reader skips it. Any other damage — an
unparsable line in the middle, a record pointing at a workload that does not exist, a missing or
different identity card — is refused with a one-line :class:`SlimError`, never repaired silently.

Readers (``compile --db``) never modify the folder and take no lock: they read the complete lines
into a private snapshot, so a ``tune`` appending at the same time cannot disturb them. A second
writer is refused while the first holds the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field

from ..atomic_files import write_text_atomic
from ..errors import SlimError, first_line

CARD = "slimtvm-db.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
LOCK = "slimtvm-db.lock"
FORMAT = "slimtvm-tuning-db"
VERSION = 1


@dataclass
class TuningDatabase:
    """An opened, validated database: the MetaSchedule object and what is in it."""

    path: str
    database: object  # tvm.s_tir.meta_schedule.database.JSONDatabase
    workload_count: int
    record_count: int
    records_per_workload: dict
    applied: list = field(default_factory=list)  # kernels a compile took from this database
    lock: object = None  # the writer's held filelock.FileLock; None for a reader

    def close(self) -> None:
        """Release the writer's lock (a reader has nothing to release)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def target_identity(spec) -> dict:
    """What must match between a database and a compile: architecture and CPU features."""
    config = spec.config
    return {
        "arch": spec.arch,
        "mtriple": config.get("mtriple", ""),
        "mcpu": config.get("mcpu", ""),
        "mattr": sorted(config.get("mattr", []) or []),
    }


def open_database(path: str, spec, create: bool) -> TuningDatabase:
    """Open the tuning database in folder ``path`` for target ``spec``: with ``create``, as its
    writer (started if missing, locked until :meth:`TuningDatabase.close`); without, as a reader
    of a snapshot of its complete records (nothing in the folder is modified).

    Refuses: a missing folder when not creating, a folder that is not a slimtvm database, a
    database for another target, a database another writer holds, and damaged files (see module
    docstring).
    """
    card_path = os.path.join(path, CARD)
    if not os.path.isdir(path):
        if not create:
            raise SlimError(f"tuning database not found: {path} (make one with `slimtvm tune ... --db {path}`)")
        if os.path.exists(path):
            raise SlimError(f"tuning database path is a file, not a folder: {path}")
        os.makedirs(path)
    if not os.path.exists(card_path):
        if set(os.listdir(path)) - {LOCK}:
            raise SlimError(f"not a slimtvm tuning database (no {CARD}, and the folder is not empty): {path}")
        if not create:
            raise SlimError(f"tuning database is empty (no {CARD}): {path}")
        write_text_atomic(card_path, json.dumps({"format": FORMAT, "version": VERSION, "target": target_identity(spec)}, indent=1) + "\n")
    card = _read_card(card_path)
    if card.get("target") != target_identity(spec):
        raise SlimError(f"tuning database {path} was made for target {_describe(card.get('target'))}, not {_describe(target_identity(spec))}")

    lock = _lock(path) if create else None
    try:
        return _open(path, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _lock(path: str):
    from filelock import FileLock, Timeout

    lock = FileLock(os.path.join(path, LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SlimError(f"tuning database {path} is being written by another `slimtvm tune` (it holds {os.path.join(path, LOCK)})") from None
    return lock


def _open(path: str, lock) -> TuningDatabase:
    from tvm.s_tir import meta_schedule as ms

    writer = lock is not None
    workload_lines = _valid_lines(os.path.join(path, WORKLOADS), "workload", repair=writer)
    record_lines = _valid_lines(os.path.join(path, RECORDS), "tuning record", repair=writer)
    workloads, records = [json.loads(line) for line in workload_lines], [json.loads(line) for line in record_lines]
    per_workload: dict = {}
    for number, record in enumerate(records, start=1):
        if not (isinstance(record, list) and len(record) == 2 and isinstance(record[0], int) and 0 <= record[0] < len(workloads)):
            raise SlimError(f"corrupt tuning database: {os.path.join(path, RECORDS)} line {number} is not a record of a known workload")
        per_workload[record[0]] = per_workload.get(record[0], 0) + 1
    folder = path if writer else _snapshot(workload_lines, record_lines)
    try:
        database = ms.database.JSONDatabase(work_dir=folder, allow_missing=True)
    except Exception as err:  # noqa: BLE001 - TVM's parser: report its first line
        raise SlimError(f"corrupt tuning database {path}: {first_line(err)}") from None
    finally:
        if not writer:
            shutil.rmtree(folder, ignore_errors=True)  # JSONDatabase read it all when it was made
    return TuningDatabase(path, database, len(workloads), len(records), per_workload, lock=lock)


def _snapshot(workload_lines: list, record_lines: list) -> str:
    """A private folder with the complete lines a reader saw, for MetaSchedule to load."""
    folder = tempfile.mkdtemp(prefix="slimtvm-db-snapshot-")
    for name, lines in ((WORKLOADS, workload_lines), (RECORDS, record_lines)):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.writelines(line + b"\n" for line in lines)
    return folder


def _read_card(card_path: str) -> dict:
    try:
        with open(card_path, encoding="utf-8") as handle:
            card = json.load(handle)
    except (OSError, ValueError) as err:
        raise SlimError(f"corrupt tuning database: cannot read {card_path}: {first_line(err)}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise SlimError(f"not a slimtvm tuning database: {card_path} has no format {FORMAT!r}")
    if card.get("version") != VERSION:
        raise SlimError(f"tuning database {card_path} has version {card.get('version')}, this slimtvm reads version {VERSION}")
    return card


def _valid_lines(file_path: str, what: str, repair: bool) -> list:
    """The complete JSON lines of ``file_path`` (bytes, each parsed once to check it). A torn last
    line is left out; with ``repair`` (the writer, under its lock) it is also cut off the file, and
    a whole but unterminated last line gets its newline."""
    if not os.path.exists(file_path):
        return []
    with open(file_path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline
    kept = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            raise SlimError(f"corrupt tuning database: {file_path} line {number} is not valid JSON") from None
        kept.append(line)
    if tail.strip():
        try:
            json.loads(tail)
            kept.append(tail)
            if repair:
                with open(file_path, "ab") as handle:  # whole but unterminated: terminate it
                    handle.write(b"\n")
        except ValueError:
            # A killed run stopped mid-line: that one measurement was never committed.
            if repair:
                with open(file_path, "r+b") as handle:
                    handle.truncate(len(data) - len(tail))
                warnings.warn(f"dropped an incomplete last {what} in {file_path} (a run was killed while writing it)", stacklevel=3)
            else:
                warnings.warn(f"skipped an incomplete last {what} in {file_path} (being written, or left by a killed run)", stacklevel=3)
    return kept


def _describe(identity) -> str:
    if not isinstance(identity, dict):
        return "an unknown target"
    parts = [identity.get("arch", "?")]
    if identity.get("mcpu"):
        parts.append(f"mcpu={identity['mcpu']}")
    if identity.get("mattr"):
        parts.append("mattr=" + ",".join(identity["mattr"]))
    return " ".join(parts)
