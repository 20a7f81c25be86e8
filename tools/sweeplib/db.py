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


class Results:
    def __init__(self, path, create=True):
        if not create and not os.path.exists(path):
            raise FileNotFoundError(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)

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

    def start_run(self, spec, parts, scheduler, binary, commit, submitted):
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO runs (spec, parts, scheduler, binary, commit_id, started, submitted, done, failed, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 'running')",
                (spec, ",".join(parts), scheduler, binary, commit, now(), submitted))
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
            return self.db.execute("UPDATE cells SET status = 'interrupted' WHERE status = 'running'").rowcount

    def attempt_started(self, run, part, key, command, options, event):
        """An attempt of a cell began on a worker (its binary is about to start)."""
        with self.transaction():
            if self.db.execute("SELECT 1 FROM attempts WHERE id = ?", (event["id"],)).fetchone():
                return  # already recorded
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

    def finish(self, run, part, key, command, options, result, line):
        """The cell's final outcome: done (with its report and result line) or failed."""
        with self.transaction():
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
