"""The queue and the history on disk (SQLite), so that neither is lost when the server stops.

One row per prompt, whose `state` moves   pending -> running -> success | error | interrupted
                                          pending -> cancelled            (deleted from the queue before it ran)
On start, pending prompts are queued again; a prompt that was running when the server died is marked as an error
(running it again could crash the server again), keeping the outputs it had recorded (`record_output`: each file
as it is written), so history knows every file a prompt left. The HTTP routes read history, queue and jobs from here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINISHED = ("success", "error", "interrupted")  # the states that make up the history

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
"""


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

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add(self, rec: PromptRecord) -> None:
        self._run(
            "INSERT INTO prompts (prompt_id, number, state, prompt, extra_data, outputs_to_execute, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                rec.prompt_id,
                rec.number,
                rec.state,
                json.dumps(rec.prompt),
                json.dumps(rec.extra_data),
                json.dumps(rec.outputs_to_execute),
                rec.created_at,
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
            outputs = json.loads(row["outputs"]) if row is not None and row["outputs"] else {}
            outputs.setdefault(node_id, {}).setdefault("images", []).append(ref)
            self._db.execute("UPDATE prompts SET outputs = ? WHERE prompt_id = ?", (json.dumps(outputs), prompt_id))

    def finish(self, rec: PromptRecord) -> None:
        """Store how a prompt ended (state, outputs, messages, error)."""
        self._run(
            "UPDATE prompts SET state = ?, ended_at = ?, outputs = ?, messages = ?, error = ? WHERE prompt_id = ?",
            (
                rec.state,
                rec.ended_at,
                json.dumps(rec.outputs),
                json.dumps(rec.messages),
                json.dumps(rec.error) if rec.error is not None else None,
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
                (now_ms(), json.dumps(msgs), json.dumps(error), row["prompt_id"]),
            )
        return self.select("state = 'pending'", order="number, created_at")

    def next_number(self) -> int:
        """One more than the highest queue number used so far (numbers keep growing across restarts)."""
        row = self._run("SELECT MAX(ABS(number)) AS top FROM prompts")[0]
        return int(row["top"] or 0) + 1

    def select(self, where: str = "1", args: tuple = (), order: str = "ended_at, rowid") -> list[PromptRecord]:
        rows = self._run(f"SELECT * FROM prompts WHERE {where} ORDER BY {order}", args)
        return [_record(row) for row in rows]

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
        for prompt_id in prompt_ids:
            self._run(f"DELETE FROM prompts WHERE prompt_id = ? AND state IN ({marks})", (prompt_id, *FINISHED))


def _record(row: sqlite3.Row) -> PromptRecord:
    return PromptRecord(
        prompt_id=row["prompt_id"],
        number=row["number"],
        prompt=json.loads(row["prompt"]),
        extra_data=json.loads(row["extra_data"]),
        outputs_to_execute=json.loads(row["outputs_to_execute"]),
        state=row["state"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        outputs=json.loads(row["outputs"]) if row["outputs"] else {},
        messages=json.loads(row["messages"]) if row["messages"] else [],
        error=json.loads(row["error"]) if row["error"] else None,
    )
