"""slimtvm's tuning database: MetaSchedule's JSON database in a folder, with an identity card.

Layout of ``DIR``:

- ``slimtvm-db.json``: what made the database (format, version, target). Written once,
  atomically, before any record.
- ``database_workload.json`` and ``database_tuning_record.json``: MetaSchedule's JSON database,
  one JSON document per line, appended as each measurement is committed.

Kill safety: TVM appends one line per record and flushes it, so a process killed at any moment
leaves every earlier line whole; at worst the last line is cut short. :func:`open_database`
drops such a torn last line (a line without its newline that is not valid JSON) and keeps
everything else. Any other damage — an unparsable line in the middle, a record pointing at a
workload that does not exist, a missing or different identity card — is refused with a
one-line :class:`SlimError`, never repaired silently.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

from ..atomic_files import write_text_atomic
from ..errors import SlimError, first_line

CARD = "slimtvm-db.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
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
    """Open (or, with ``create``, start) the tuning database in folder ``path`` for target ``spec``.

    Refuses: a missing folder when not creating, a folder that is not a slimtvm database, a
    database for another target, and damaged files (see module docstring).
    """
    from tvm.s_tir import meta_schedule as ms

    card_path = os.path.join(path, CARD)
    if not os.path.isdir(path):
        if not create:
            raise SlimError(f"tuning database not found: {path} (make one with `slimtvm tune ... --db {path}`)")
        if os.path.exists(path):
            raise SlimError(f"tuning database path is a file, not a folder: {path}")
        os.makedirs(path)
    if not os.path.exists(card_path):
        if os.listdir(path):
            raise SlimError(f"not a slimtvm tuning database (no {CARD}, and the folder is not empty): {path}")
        if not create:
            raise SlimError(f"tuning database is empty (no {CARD}): {path}")
        write_text_atomic(card_path, json.dumps({"format": FORMAT, "version": VERSION, "target": target_identity(spec)}, indent=1) + "\n")
    card = _read_card(card_path)
    if card.get("target") != target_identity(spec):
        raise SlimError(f"tuning database {path} was made for target {_describe(card.get('target'))}, not {_describe(target_identity(spec))}")

    workloads = _valid_lines(os.path.join(path, WORKLOADS), "workload")
    records = _valid_lines(os.path.join(path, RECORDS), "tuning record")
    per_workload: dict = {}
    for number, record in enumerate(records, start=1):
        if not (isinstance(record, list) and len(record) == 2 and isinstance(record[0], int) and 0 <= record[0] < len(workloads)):
            raise SlimError(f"corrupt tuning database: {os.path.join(path, RECORDS)} line {number} is not a record of a known workload")
        per_workload[record[0]] = per_workload.get(record[0], 0) + 1
    try:
        database = ms.database.JSONDatabase(work_dir=path, allow_missing=True)
    except Exception as err:  # noqa: BLE001 - TVM's parser: report its first line
        raise SlimError(f"corrupt tuning database {path}: {first_line(err)}") from None
    return TuningDatabase(path, database, len(workloads), len(records), per_workload)


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


def _valid_lines(file_path: str, what: str) -> list:
    """Parsed JSON lines of ``file_path``; a torn last line is cut off (with a warning)."""
    if not os.path.exists(file_path):
        return []
    with open(file_path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline
    parsed = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise SlimError(f"corrupt tuning database: {file_path} line {number} is not valid JSON") from None
    if tail.strip():
        try:
            parsed.append(json.loads(tail))
            with open(file_path, "ab") as handle:  # whole but unterminated: terminate it
                handle.write(b"\n")
        except ValueError:
            # A killed run stopped mid-line: that one measurement was never committed.
            with open(file_path, "r+b") as handle:
                handle.truncate(len(data) - len(tail))
            warnings.warn(f"dropped an incomplete last {what} in {file_path} (a run was killed while writing it)", stacklevel=3)
    return parsed


def _describe(identity) -> str:
    if not isinstance(identity, dict):
        return "an unknown target"
    parts = [identity.get("arch", "?")]
    if identity.get("mcpu"):
        parts.append(f"mcpu={identity['mcpu']}")
    if identity.get("mattr"):
        parts.append("mattr=" + ",".join(identity["mattr"]))
    return " ".join(parts)
