"""The results database: one SQLite file on the driver, readable with the stock sqlite3 shell.

    cells     one row per cell (part, key): status running | interrupted | done | failed, attempts,
              the full command, worker, start/end, exit code, error, the report JSON, the result line
    attempts  one row per attempt of a cell: worker, pid, scratch directory, start/end, outcome
              (done, failed (exit N), worker died, driver stopped)
    runs      one row per `tools/sweep run`: spec, parts, scheduler, binary, commit, counts

Every change is one transaction (BEGIN IMMEDIATE ... COMMIT), so a driver killed at any moment
leaves either the whole change or none of it.
"""
import json, os, sqlite3, time

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    part TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'interrupted', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    command TEXT NOT NULL,
    options TEXT NOT NULL,
    worker TEXT,
    started TEXT,
    ended TEXT,
    seconds REAL,
    exit_code INTEGER,
    error TEXT,
    report TEXT,
    line TEXT,
    run INTEGER,
    PRIMARY KEY (part, key)
);
CREATE TABLE IF NOT EXISTS attempts (
    part TEXT NOT NULL,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    run INTEGER,
    id TEXT NOT NULL UNIQUE,
    worker TEXT,
    pid INTEGER,
    scratch TEXT,
    started TEXT,
    ended TEXT,
    outcome TEXT,
    PRIMARY KEY (part, key, attempt)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    parts TEXT NOT NULL,
    scheduler TEXT,
    binary TEXT,
    commit_id TEXT,
    binary_version TEXT,
    started TEXT,
    ended TEXT,
    submitted INTEGER,
    done INTEGER,
    failed INTEGER,
    status TEXT
);
"""


def now():
    return stamp(time.time())


def stamp(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


OURS = {"cells": {"part", "key", "status", "attempts"}, "attempts": {"part", "key", "attempt", "id"},
        "runs": {"id", "spec", "parts"}}


class DatabaseError(Exception):
    """A results database that cannot be used (not SQLite, another application's, read-only)."""


def inspect(path):
    """Checks that `path` is a results database (or an empty file, or absent) before it is used."""
    if not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise DatabaseError(f"results database {path}: is a directory")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as error:
        raise DatabaseError(f"results database {path}: cannot be read ({error.strerror})")
    if not header:
        return  # an empty file is an empty SQLite database
    if header != b"SQLite format 3\x00":
        raise DatabaseError(f"results database {path}: not a SQLite database")
    try:
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                      if not r[0].startswith("sqlite_")}
            columns = {t: {r[1] for r in c.execute(f'PRAGMA table_info("{t}")')} for t in tables & set(OURS)}
        finally:
            c.close()
    except sqlite3.DatabaseError as error:
        raise DatabaseError(f"results database {path}: not a readable SQLite database ({error})")
    foreign = sorted(tables - set(OURS)) or sorted(t for t, need in OURS.items() if t in columns and not need <= columns[t])
    if foreign:
        raise DatabaseError(f"results database {path}: another application's database (tables "
                            f"{', '.join(sorted(tables))}): pass --db with a file of its own")


class Results:
    def __init__(self, path, create=True):
        inspect(path)
        if not create and not os.path.exists(path):
            raise FileNotFoundError(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        if (os.path.exists(path) and not os.access(path, os.W_OK)) or not os.access(folder, os.W_OK):
            raise DatabaseError(f"results database {path}: read-only (the file or its folder cannot be written; "
                                "SQLite needs both)")
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            with self.transaction():
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                columns = {r[1] for r in self.db.execute("PRAGMA table_info(runs)")}
                if "binary_version" not in columns:  # a database of an older tools/sweep
                    self.db.execute("ALTER TABLE runs ADD COLUMN binary_version TEXT")
        except sqlite3.OperationalError as error:
            what = "read-only" if "readonly" in str(error) else str(error)
            raise DatabaseError(f"results database {path}: {what}")

    @classmethod
    def snapshot(cls, path):
        """A copy in memory of the database at `path` (opened read-only; none: empty), for list,
        report and export: they may import export lines into it, the file is never written."""
        inspect(path)
        self = cls.__new__(cls)
        self.path = path
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.row_factory = sqlite3.Row
        if os.path.exists(path) and os.path.getsize(path) > 0:
            try:
                source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                source.backup(self.db)
                source.close()
            except sqlite3.DatabaseError as error:
                raise DatabaseError(f"results database {path}: cannot be read ({error})")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self.db.execute(statement)
        if "binary_version" not in {r[1] for r in self.db.execute("PRAGMA table_info(runs)")}:
            self.db.execute("ALTER TABLE runs ADD COLUMN binary_version TEXT")
        return self

    def transaction(self):
        return _Transaction(self.db)

    def close(self):
        self.db.close()

    # --- reading ---

    def rows(self, part=None):
        if part is None:
            return {(r["part"], r["key"]): r for r in self.db.execute("SELECT * FROM cells")}
        return {(r["part"], r["key"]): r for r in self.db.execute("SELECT * FROM cells WHERE part = ?", (part,))}

    def row(self, part, key):
        return self.db.execute("SELECT * FROM cells WHERE part = ? AND key = ?", (part, key)).fetchone()

    def attempts(self, part, key):
        return list(self.db.execute("SELECT * FROM attempts WHERE part = ? AND key = ? ORDER BY attempt", (part, key)))

    # --- writing (each a transaction) ---

    def start_run(self, spec, parts, scheduler, binary, commit, submitted, version=None):
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO runs (spec, parts, scheduler, binary, commit_id, binary_version, started, submitted, done, "
                "failed, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 'running')",
                (spec, ",".join(parts), scheduler, binary, commit, version, now(), submitted))
            return cursor.lastrowid

    def end_run(self, run, done, failed, status):
        with self.transaction():
            self.db.execute("UPDATE runs SET ended = ?, done = ?, failed = ?, status = ? WHERE id = ?",
                            (now(), done, failed, status, run))

    def interrupt_stale(self, note="driver stopped"):
        """Cells left running by a driver that died: interrupted (to be run again), their open
        attempts closed with `note`. Returns how many cells."""
        with self.transaction():
            self.db.execute("UPDATE attempts SET outcome = ?, ended = COALESCE(ended, ?) WHERE outcome IS NULL",
                            (note, now()))
            # runs whose driver was killed (kill -9): the lock is ours, so none of them is still going
            self.db.execute("UPDATE runs SET status = 'interrupted', ended = COALESCE(ended, ?) WHERE status = 'running'",
                            (now(),))
            return self.db.execute("UPDATE cells SET status = 'interrupted' WHERE status = 'running'").rowcount

    def attempt_started(self, run, part, key, command, options, event):
        """An attempt of a cell began on a worker (its binary is about to start)."""
        with self.transaction():
            if self.db.execute("SELECT 1 FROM attempts WHERE id = ?", (event["id"],)).fetchone():
                return False  # already recorded
            row = self.db.execute("SELECT status FROM cells WHERE part = ? AND key = ?", (part, key)).fetchone()
            if row and row["status"] == "done":
                return False  # a finished cell's task run again by Dask (its result lost): never undone
            # an earlier attempt still open: its worker died (Dask moved the cell here)
            self.db.execute("UPDATE attempts SET outcome = 'worker died', ended = ? WHERE part = ? AND key = ? "
                            "AND outcome IS NULL", (stamp(event["started"]), part, key))
            row = self.db.execute("SELECT attempts, status FROM cells WHERE part = ? AND key = ?", (part, key)).fetchone()
            attempt = (row["attempts"] if row else 0) + 1
            worker = f"{event['host']} {event['worker']} pid {event['pid']}"
            if row:
                self.db.execute("UPDATE cells SET status = 'running', attempts = ?, command = ?, options = ?, worker = ?, "
                                "started = ?, ended = NULL, seconds = NULL, exit_code = NULL, error = NULL, report = NULL, "
                                "line = NULL, run = ? WHERE part = ? AND key = ?",
                                (attempt, command, options, worker, stamp(event["started"]), run, part, key))
            else:
                self.db.execute("INSERT INTO cells (part, key, status, attempts, command, options, worker, started, run) "
                                "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                                (part, key, attempt, command, options, worker, stamp(event["started"]), run))
            self.db.execute("INSERT INTO attempts (part, key, attempt, run, id, worker, pid, scratch, started) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (part, key, attempt, run, event["id"], worker, event["pid"], event["scratch"],
                             stamp(event["started"])))
            return True

    def finish(self, run, part, key, command, options, result, line):
        """The cell's final outcome: done (with its report and result line) or failed."""
        with self.transaction():
            current = self.db.execute("SELECT status FROM cells WHERE part = ? AND key = ?", (part, key)).fetchone()
            if current and current["status"] == "done":
                return False  # recorded once: a done cell is never overwritten
            worker = f"{result['host']} {result['worker']} pid {result['pid']}" if result.get("worker") else None
            outcome = "done" if result["status"] == "done" else (
                f"failed (exit {result['exit_code']})" if result.get("exit_code") is not None else "failed")
            if result.get("id"):
                self.db.execute("UPDATE attempts SET outcome = ?, ended = ? WHERE id = ?",
                                (outcome, stamp(result["ended"]), result["id"]))
            self.db.execute("UPDATE attempts SET outcome = 'worker died', ended = COALESCE(ended, ?) WHERE part = ? "
                            "AND key = ? AND outcome IS NULL", (now(), part, key))
            attempts = self.db.execute("SELECT COUNT(*) FROM attempts WHERE part = ? AND key = ?", (part, key)).fetchone()[0]
            row = self.db.execute("SELECT attempts FROM cells WHERE part = ? AND key = ?", (part, key)).fetchone()
            attempts = max(attempts, row["attempts"] if row else 0)
            values = (result["status"], attempts, result.get("command") or command, options, worker,
                      stamp(result["started"]) if result.get("started") else None,
                      stamp(result["ended"]) if result.get("ended") else now(),
                      result.get("seconds"), result.get("exit_code"), result.get("error"), result.get("report"),
                      json.dumps(line) if line is not None else None, run)
            if row:
                self.db.execute("UPDATE cells SET status = ?, attempts = ?, command = ?, options = ?, "
                                "worker = COALESCE(?, worker), started = COALESCE(?, started), ended = ?, seconds = ?, "
                                "exit_code = ?, error = ?, report = ?, line = ?, run = ? WHERE part = ? AND key = ?",
                                values + (part, key))
            else:
                self.db.execute("INSERT INTO cells (status, attempts, command, options, worker, started, ended, seconds, "
                                "exit_code, error, report, line, run, part, key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                values + (part, key))
            return True

    def mark_interrupted(self, part, key):
        with self.transaction():
            self.db.execute("UPDATE attempts SET outcome = 'driver stopped', ended = ? WHERE part = ? AND key = ? "
                            "AND outcome IS NULL", (now(), part, key))
            self.db.execute("UPDATE cells SET status = 'interrupted' WHERE part = ? AND key = ? AND status = 'running'",
                            (part, key))

    def import_lines(self, part, lines, options_of):
        """Result lines from an export file count as done cells (without a report)."""
        added = 0
        with self.transaction():
            for line in lines:
                key = line["key"]
                row = self.db.execute("SELECT status FROM cells WHERE part = ? AND key = ?", (part, key)).fetchone()
                if row and row["status"] == "done":
                    continue
                values = ("done", 0, line.get("command", ""), json.dumps(options_of(key)), "imported", None, None,
                          line.get("seconds"), None, None, None, json.dumps(line), None)
                if row:
                    self.db.execute("UPDATE cells SET status = ?, attempts = ?, command = ?, options = ?, worker = ?, "
                                    "started = ?, ended = ?, seconds = ?, exit_code = ?, error = ?, report = ?, line = ?, "
                                    "run = ? WHERE part = ? AND key = ?", values + (part, key))
                else:
                    self.db.execute("INSERT INTO cells (status, attempts, command, options, worker, started, ended, "
                                    "seconds, exit_code, error, report, line, run, part, key) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values + (part, key))
                added += 1
        return added


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
        return False
