"""The queue and the history on disk (SQLite), so that neither is lost when the server stops.

One row per prompt, whose `state` moves   pending -> running -> success | error | interrupted
                                          pending -> cancelled            (deleted from the queue before it ran)
On start, pending prompts are queued again; a prompt that was running when the server died is marked as an error
(running it again could crash the server again), keeping the outputs it had recorded (`record_output`: each file
as it is written), so history knows every file a prompt left. The HTTP routes read history, queue and jobs from here.

Values are written as strict JSON (no NaN or Infinity) and queue numbers stay within MAX_NUMBER. A row that an
older version (or a hand edit) left unreadable, say `number` = Infinity or a prompt that is not an object, is
reported once in the log and skipped: the server starts and serves the rest of the history.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.server.strict_json import dumps, dumps_finite, loads_lenient

log = logging.getLogger("atelier.server")

FINISHED = ("success", "error", "interrupted")  # the states that make up the history
STATES = ("pending", "running", *FINISHED, "cancelled")
MAX_NUMBER = 2**53  # queue numbers are exact in a JSON number (a double) and in SQLite's REAL up to here

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,                  -- queue priority: smaller runs first ("front" prompts are negative)
    state TEXT NOT NULL,                   -- pending | running | success | error | interrupted | cancelled
    prompt TEXT NOT NULL,                  -- the validated API prompt (JSON)
    extra_data TEXT NOT NULL,              -- client_id, create_time, extra_pnginfo {workflow} (JSON)
    outputs_to_execute TEXT NOT NULL,      -- ids of the output nodes that passed validation (JSON list)
    created_at INTEGER NOT NULL,           -- ms since the epoch
    started_at INTEGER,
    ended_at INTEGER,
    outputs TEXT,                          -- {node_id: {"images": [file refs]}} (JSON)
    messages TEXT,                         -- [[event, data], ...] status messages, as ComfyUI's history keeps
    error TEXT                             -- the execution_error payload, if any (JSON)
);
CREATE TABLE IF NOT EXISTS learners (      -- classroom mode (classroom.py): who joined, by display name
    learner_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL            -- ms since the epoch
);
CREATE TABLE IF NOT EXISTS class_secrets ( -- classroom mode: the join code, the instructor secret, the cookie key,
                                           -- the exercise pushed last (JSON)
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parcours (      -- le parcours (lessons/parcours.py): the steps each person has done
    owner TEXT PRIMARY KEY,                -- a learner's id; '' for the local user and the instructor
    steps TEXT NOT NULL,                   -- {step id: {"done": bool, "opened": ms}} (JSON)
    updated_at INTEGER NOT NULL            -- ms since the epoch
);
"""
# Added after the first release: the learner who queued the prompt (NULL: the local user or the instructor).
_OWNER_COLUMN = "ALTER TABLE prompts ADD COLUMN owner TEXT"
# Added with the instructor's page: when the instructor removed the learner (NULL: still in the class).
_REMOVED_COLUMN = "ALTER TABLE learners ADD COLUMN removed_at INTEGER"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PromptRecord:
    """One prompt as stored. `number`, `prompt_id`, `prompt`, `extra_data`, `outputs_to_execute` form ComfyUI's
    queue tuple (see `queue_tuple`)."""

    prompt_id: str
    number: float
    prompt: dict
    extra_data: dict
    outputs_to_execute: list[str]
    state: str = "pending"
    created_at: int = field(default_factory=now_ms)
    started_at: int | None = None
    ended_at: int | None = None
    outputs: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    error: dict | None = None
    owner: str | None = None  # classroom mode: the learner who queued it (None: the local user or the instructor)

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    def queue_tuple(self) -> list:
        """[number, prompt_id, prompt, extra_data, outputs_to_execute]: an entry of /queue and of history "prompt"."""
        number: Any = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


class PromptStore:
    """Thread-safe access to atelier.sqlite (the worker thread writes, the HTTP handlers read)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        if "owner" not in {row["name"] for row in self._db.execute("PRAGMA table_info(prompts)")}:
            self._db.execute(_OWNER_COLUMN)
        if "removed_at" not in {row["name"] for row in self._db.execute("PRAGMA table_info(learners)")}:
            self._db.execute(_REMOVED_COLUMN)
        self._reported: set[str] = set()  # ids of unreadable rows already reported in the log

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add(self, rec: PromptRecord) -> None:
        self._run(
            "INSERT INTO prompts (prompt_id, number, state, prompt, extra_data, outputs_to_execute, created_at, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.prompt_id,
                rec.number,
                rec.state,
                dumps(rec.prompt),
                dumps(rec.extra_data),
                dumps(rec.outputs_to_execute),
                rec.created_at,
                rec.owner,
            ),
        )

    def exists(self, prompt_id: str) -> bool:
        return bool(self._run("SELECT 1 FROM prompts WHERE prompt_id = ?", (prompt_id,)))

    def mark_running(self, prompt_id: str, started_at: int) -> None:
        self._run("UPDATE prompts SET state = 'running', started_at = ? WHERE prompt_id = ?", (started_at, prompt_id))

    def mark_cancelled(self, prompt_ids: list[str]) -> None:
        for prompt_id in prompt_ids:
            self._run(
                "UPDATE prompts SET state = 'cancelled', ended_at = ? WHERE prompt_id = ? AND state = 'pending'",
                (now_ms(), prompt_id),
            )

    def record_output(self, prompt_id: str, node_id: str, ref: dict) -> None:
        """Add a file reference to a running prompt's outputs ({node_id: {"images": [refs]}}) as the file is
        written; `finish` then stores the prompt's final outputs in their place."""
        with self._lock:
            row = self._db.execute("SELECT outputs FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
            outputs = loads_lenient(row["outputs"]) if row is not None and row["outputs"] else {}
            outputs.setdefault(node_id, {}).setdefault("images", []).append(ref)
            self._db.execute("UPDATE prompts SET outputs = ? WHERE prompt_id = ?", (dumps_finite(outputs), prompt_id))

    def finish(self, rec: PromptRecord) -> None:
        """Store how a prompt ended (state, outputs, messages, error)."""
        self._run(
            "UPDATE prompts SET state = ?, ended_at = ?, outputs = ?, messages = ?, error = ? WHERE prompt_id = ?",
            (
                rec.state,
                rec.ended_at,
                dumps_finite(rec.outputs),
                dumps_finite(rec.messages),
                dumps_finite(rec.error) if rec.error is not None else None,
                rec.prompt_id,
            ),
        )

    def recover(self) -> list[PromptRecord]:
        """After a restart: fail the prompt that was running, return the pending ones (to queue again)."""
        message = "The server stopped while this prompt was running."
        for row in self._run("SELECT prompt_id FROM prompts WHERE state = 'running'"):
            error = {"exception_message": message, "exception_type": "ServerRestart", "node_id": None}
            msgs = [["execution_error", {"prompt_id": row["prompt_id"], **error, "timestamp": now_ms()}]]
            self._run(
                "UPDATE prompts SET state = 'error', ended_at = ?, outputs = COALESCE(outputs, '{}'), messages = ?, "
                "error = ? "
                "WHERE prompt_id = ?",
                (now_ms(), dumps(msgs), dumps(error), row["prompt_id"]),
            )
        return self.select("state = 'pending'", order="number, created_at")

    def next_number(self) -> int:
        """One more than the highest queue number used so far (numbers keep growing across restarts). Numbers
        that are not numbers, or beyond MAX_NUMBER (Infinity, 1e19: stored by older versions), are left out."""
        row = self._run(
            "SELECT MAX(ABS(number)) AS top FROM prompts WHERE typeof(number) IN ('integer', 'real') "
            "AND ABS(number) <= ?",
            (MAX_NUMBER,),
        )[0]
        return int(row["top"] or 0) + 1

    def select(self, where: str = "1", args: tuple = (), order: str = "ended_at, rowid") -> list[PromptRecord]:
        """The readable rows that match; an unreadable one is reported (once) and left out."""
        records = []
        for row in self._run(f"SELECT * FROM prompts WHERE {where} ORDER BY {order}", args):
            try:
                records.append(_record(row))
            except (ValueError, TypeError, RecursionError) as ex:
                self._report(row, ex)
        return records

    def _report(self, row: sqlite3.Row, ex: Exception) -> None:
        prompt_id = str(row["prompt_id"])
        if prompt_id not in self._reported:
            self._reported.add(prompt_id)
            log.warning("Skipped prompt %r in the database: %s (the row is kept, unread).", prompt_id[:80], ex)

    def get(self, prompt_id: str) -> PromptRecord | None:
        found = self.select("prompt_id = ?", (prompt_id,))
        return found[0] if found else None

    def history(self) -> list[PromptRecord]:
        """Finished prompts, oldest first (the order ComfyUI's /history keeps)."""
        marks = ", ".join("?" * len(FINISHED))
        return self.select(f"state IN ({marks})", FINISHED)

    def delete_history(self, prompt_ids: list[str] | None = None) -> None:
        """Forget finished prompts: these ids, or all of them (files on disk are kept)."""
        marks = ", ".join("?" * len(FINISHED))
        if prompt_ids is None:
            self._run(f"DELETE FROM prompts WHERE state IN ({marks}) OR state = 'cancelled'", FINISHED)
            return
        self._run(  # one statement: a DELETE per id took 7.6 s for a million ids
            f"DELETE FROM prompts WHERE prompt_id IN (SELECT value FROM json_each(?)) AND state IN ({marks})",
            (dumps(prompt_ids), *FINISHED),
        )

    # ---- classroom mode (classroom.py) ----

    def add_learner(self, learner_id: str, name: str, created_at: int) -> None:
        self._run(
            "INSERT INTO learners (learner_id, name, created_at) VALUES (?, ?, ?)", (learner_id, name, created_at)
        )

    def learners(self, removed: bool = False) -> list[tuple[str, str, int]]:
        """(learner_id, name, created_at) of everyone in the class, first joined first; removed=True: of those the
        instructor removed instead."""
        where = "removed_at IS NOT NULL" if removed else "removed_at IS NULL"
        rows = self._run(f"SELECT learner_id, name, created_at FROM learners WHERE {where} ORDER BY created_at, rowid")
        return [(row["learner_id"], row["name"], row["created_at"]) for row in rows]

    def remove_learner(self, learner_id: str, removed_at: int) -> None:
        """Mark a learner removed (their row stays: their history keeps its name in the session's export)."""
        self._run("UPDATE learners SET removed_at = ? WHERE learner_id = ?", (removed_at, learner_id))

    def set_class_value(self, name: str, value: str | None) -> None:
        """Store (or, with None, forget) a value of the class that changes, such as the exercise pushed last."""
        if value is None:
            self._run("DELETE FROM class_secrets WHERE name = ?", (name,))
        else:
            self._run("INSERT OR REPLACE INTO class_secrets (name, value) VALUES (?, ?)", (name, value))

    def class_value(self, name: str) -> str | None:
        rows = self._run("SELECT value FROM class_secrets WHERE name = ?", (name,))
        return rows[0]["value"] if rows else None

    def class_secret(self, name: str, make: Callable[[], str]) -> str:
        """The stored secret `name`, made with `make()` and stored the first time it is asked for."""
        self._run("INSERT OR IGNORE INTO class_secrets (name, value) VALUES (?, ?)", (name, make()))
        return self._run("SELECT value FROM class_secrets WHERE name = ?", (name,))[0]["value"]

    # ---- le parcours (lessons/parcours.py, server/lab.py) ----

    def set_parcours(self, owner: str | None, steps: dict, updated_at: int) -> None:
        """Keep `owner`'s progress (a learner's id; None: the local user or the instructor), replacing the last."""
        self._run(
            "INSERT OR REPLACE INTO parcours (owner, steps, updated_at) VALUES (?, ?, ?)",
            (owner or "", dumps(steps), updated_at),
        )

    def parcours(self, owner: str | None) -> dict:
        """`owner`'s progress, {} when they have not started (or their row is unreadable)."""
        rows = self._run("SELECT steps FROM parcours WHERE owner = ?", (owner or "",))
        return _progress(rows[0]["steps"]) if rows else {}

    def all_parcours(self) -> dict[str | None, tuple[dict, int]]:
        """Everyone's progress and when it last changed: {owner (None: local/instructor): (steps, updated_at)}."""
        rows = self._run("SELECT owner, steps, updated_at FROM parcours")
        return {(row["owner"] or None): (_progress(row["steps"]), row["updated_at"]) for row in rows}


def _progress(text: str) -> dict:
    try:
        value = loads_lenient(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _record(row: sqlite3.Row) -> PromptRecord:
    """A row as a PromptRecord, every column checked; raises ValueError or TypeError (one sentence) otherwise."""
    number = row["number"]
    if not isinstance(number, (int, float)) or not math.isfinite(number) or abs(number) > MAX_NUMBER:
        raise ValueError(f"its queue number {number!r} is not a finite number within +-2**53")
    if row["state"] not in STATES:
        raise ValueError(f"its state {row['state']!r} is not one of {', '.join(STATES)}")
    times = {name: row[name] for name in ("created_at", "started_at", "ended_at")}
    for name, value in times.items():
        if not (isinstance(value, int) or (value is None and name != "created_at")):
            raise ValueError(f"its {name} {value!r} is not a time in milliseconds")
    return PromptRecord(
        prompt_id=_text(row["prompt_id"], "prompt_id"),
        number=number,
        prompt=_json(row["prompt"], dict, "prompt"),
        extra_data=_json(row["extra_data"], dict, "extra_data"),
        outputs_to_execute=_json(row["outputs_to_execute"], list, "outputs_to_execute"),
        state=row["state"],
        created_at=times["created_at"],
        started_at=times["started_at"],
        ended_at=times["ended_at"],
        outputs=_json(row["outputs"], dict, "outputs") if row["outputs"] else {},
        messages=_json(row["messages"], list, "messages") if row["messages"] else [],
        error=_json(row["error"], dict, "error") if row["error"] else None,
        owner=row["owner"] if isinstance(row["owner"], str) else None,
    )


def _text(value: Any, column: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"its {column} is a {type(value).__name__}, not text")
    return value


def _json(text: Any, kind: type, column: str) -> Any:
    """A JSON column decoded (NaN and Infinity, which older versions wrote, read as null) and of the right kind."""
    value = loads_lenient(_text(text, column))
    if not isinstance(value, kind):
        raise TypeError(f"its {column} is a JSON {type(value).__name__}; expected a {kind.__name__}")
    return value
