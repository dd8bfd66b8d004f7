"""The votes of a study in SQLite: one row per vote, none lost or doubled when the server is killed.

Why these choices:

* **WAL and ``synchronous=FULL``**: a vote is on disk when its transaction commits, and
  the server answers only after that; a server killed at any instant loses at most a
  vote it never acknowledged. Readers (the report) never block the writer.
* **An idempotency key per vote** (made by the page when it shows a trial, the primary
  key here): the page sends a vote again, with the same key, until it gets an answer,
  so a vote whose answer was lost to a kill is stored once, never twice.
* **One vote per rater and trial** (a unique constraint): a second tab or a reload
  cannot vote twice on the same trial under a new key.
* **What was shown to whom** (table ``shown``): the server records each trial it hands
  to a rater with a random ticket; a vote must carry the ticket of a trial handed to its
  rater, so no vote is stored for a trial that rater was never shown.

A connection per call: the server is threaded, and SQLite connections are cheap.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    key TEXT PRIMARY KEY,          -- the page's idempotency key
    rater TEXT NOT NULL,
    trial TEXT NOT NULL,
    choice TEXT NOT NULL,          -- the method chosen
    other TEXT NOT NULL,           -- the method not chosen
    side TEXT NOT NULL,            -- where the chosen one was shown: left or right
    seconds REAL NOT NULL,         -- time from the trial shown to the vote
    created TEXT NOT NULL,
    UNIQUE (rater, trial)
);
CREATE TABLE IF NOT EXISTS shown (
    rater TEXT NOT NULL,
    trial TEXT NOT NULL,
    ticket TEXT NOT NULL,          -- what a vote on this trial by this rater must carry
    created TEXT NOT NULL,
    PRIMARY KEY (rater, trial)
);
"""


@dataclass(frozen=True)
class Vote:
    key: str
    rater: str
    trial: str
    choice: str
    other: str
    side: str
    seconds: float


class VoteStore:
    """The ``votes.sqlite`` of one study folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: transactions are begun and committed here, explicitly.
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as db:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=10000")
            yield db

    def add(self, vote: Vote) -> str:
        """Store ``vote``; return ``stored``, ``repeat`` (this key is stored already) or
        ``voted`` (this rater voted on this trial under another key: the first vote stands)."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM votes WHERE key = ?", (vote.key,)).fetchone():
                    outcome = "repeat"
                elif db.execute(
                    "SELECT 1 FROM votes WHERE rater = ? AND trial = ?", (vote.rater, vote.trial)
                ).fetchone():
                    outcome = "voted"
                else:
                    db.execute(
                        "INSERT INTO votes (key, rater, trial, choice, other, side, seconds, created)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            vote.key,
                            vote.rater,
                            vote.trial,
                            vote.choice,
                            vote.other,
                            vote.side,
                            vote.seconds,
                            datetime.now(UTC).isoformat(),
                        ),
                    )
                    outcome = "stored"
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return outcome

    def show(self, rater: str, trial: str) -> str:
        """Record that ``trial`` was handed to ``rater``; its ticket (the same on every showing)."""
        with self._connection() as db:
            db.execute(
                "INSERT OR IGNORE INTO shown (rater, trial, ticket, created) VALUES (?, ?, ?, ?)",
                (rater, trial, secrets.token_urlsafe(16), datetime.now(UTC).isoformat()),
            )
            row = db.execute("SELECT ticket FROM shown WHERE rater = ? AND trial = ?", (rater, trial)).fetchone()
        return str(row[0])

    def ticket(self, rater: str, trial: str) -> str | None:
        """The ticket of ``trial`` as handed to ``rater``, or None: never handed to them."""
        with self._connection() as db:
            row = db.execute("SELECT ticket FROM shown WHERE rater = ? AND trial = ?", (rater, trial)).fetchone()
        return None if row is None else str(row[0])

    def voted(self, rater: str) -> set[str]:
        """The trials this rater has voted on."""
        with self._connection() as db:
            return {row[0] for row in db.execute("SELECT trial FROM votes WHERE rater = ?", (rater,))}

    def votes(self) -> list[Vote]:
        """Every vote, in the order they were stored."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT key, rater, trial, choice, other, side, seconds FROM votes ORDER BY rowid"
            ).fetchall()
        return [Vote(*row) for row in rows]
