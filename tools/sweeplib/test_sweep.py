"""The sweep test (tools/test runs it): a real LocalCluster, real cells, real kills.

    .venv/bin/python tools/sweeplib/test_sweep.py      (BLOCKWISE_BINARY picks the binary)

1. Malformed specs are refused with exit 2, naming the key, before anything runs.
2. A 6-cell sweep on a LocalCluster of 2 worker processes: one worker is killed by PID (kill -9)
   while it runs a cell; Dask runs that cell again on a worker.
3. The driver is killed (kill -9) with cells still to do: its workers and their binaries die
   with it, the database holds whole rows only; run again (and a worker killed again, so that a
   cell is retried by Dask to the end within one run), it finishes only what was left and every
   cell is recorded exactly once, one attempt counted per try.
4. A cell that fails on its own (budget cannot be met, exit 3) is recorded failed with its exit
   code and error, once, not retried.
5. A finished cell whose worker is killed afterwards stays done with one attempt (Dask does not
   run it again: the driver releases every result it has read); a symlinked --db is locked too.
6. An existing cluster (`dask scheduler`, `dask worker` started outside the repository, loopback
   only) runs a sweep through --scheduler; a driver stopped with SIGTERM kills its cells' binaries
   on the workers; the report writes its tables and plot.
Before those: values only the binary can judge (`train --check-options`), bad and foreign
databases, export lines whose command is not the cell's or that are malformed, an unreachable
scheduler, a hanging binary: each a one-line error, nothing written.
"""
import csv, json, os, shutil, signal, sqlite3, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SWEEP = os.path.join(ROOT, "tools", "sweep")
PASSED, FAILED = [], []

# Small but not instant cells (a few seconds each on one thread), so that a kill lands mid-cell.
BASE = """
[base]
modules = 2
blocks = 1
width = 8
train-size = 2000
test-size = 500
epochs = 4
profile = "none"
quiet = true
"""


def check(condition, what, detail=""):
    (PASSED if condition else FAILED).append(what)
    print(f"{'ok' if condition else 'FAILED'}: {what}" + (f" ({detail})" if detail else ""), flush=True)
    return condition


def sweep(*args, **kwargs):
    return subprocess.run([SWEEP] + list(args), capture_output=True, text=True, **kwargs)


def rows(db):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        return {r["key"]: dict(r) for r in c.execute("SELECT * FROM cells")}


def attempts(db):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        out = {}
        for r in c.execute("SELECT * FROM attempts ORDER BY key, attempt"):
            out.setdefault(r["key"], []).append(dict(r))
        return out


def wait_for(condition, timeout, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = condition()
        except sqlite3.OperationalError:  # the database is being created
            value = None
        if value:
            return value
        time.sleep(step)
    return None


def processes_under(scratch):
    """Processes whose working directory is inside the test's scratch root (cells' binaries)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(scratch):
                    found.append(int(pid))
            except OSError:
                pass
    return found


def malformed(tmp):
    print("-- malformed specs are refused before anything runs", flush=True)
    db = os.path.join(tmp, "malformed.sqlite")
    cases = [
        ("an unknown option", 'name = "m"\n[base]\nwidht = 8\n[axes]\nseed = [0]\n', ["base.widht", "unknown blockwise train option", "did you mean 'width'"]),
        ("an unknown option inside an axis bundle", 'name = "m"\n[axes]\nm = [{procedure = "e2e"}, {procedur = "sequential"}]\n', ["axes.m[1].procedur", "unknown blockwise train option"]),
        ("a wrong type", 'name = "m"\n[base]\nwidth = [8]\n[axes]\nseed = [0]\n', ["base.width", "expected a string, integer or float", "got an array"]),
        ("a flag given a value", 'name = "m"\n[base]\nin-memory = "yes"\n[axes]\nseed = [0]\n', ["base.in-memory", "expected true or false"]),
        ("an empty axis", 'name = "m"\n[axes]\nwidth = []\n', ["axes.width", "at least one value"]),
        ("an unknown top-level key", 'name = "m"\naxis = {seed = [0]}\n', ["unknown top-level key 'axis'"]),
        ("an option the sweep sets itself", 'name = "m"\n[base]\nstore = "x.sqlite"\n[axes]\nseed = [0]\n', ["base.store", "cannot be set in a spec"]),
        ("a key template naming an option no cell sets", 'name = "m"\nkey = "{seed}|{sed}"\n[axes]\nseed = [0]\n', ["key", "{sed}"]),
        ("a missing name", '[axes]\nseed = [0]\n', ["name: missing"]),
        ("a value not among the option's values", 'name = "m"\n[axes]\nconv-engine = ["fast"]\n', ["axes.conv-engine[0]", "must be one of"]),
    ]
    # values only the binary can judge: `train --check-options` refuses them, the cell named
    cases += [
        ("a seed that is not a number", 'name = "m"\n[base]\nseed = "abc"\n[axes]\nwidth = [8]\n', ["cell width=8", "--seed"]),
        ("a fractional width", 'name = "m"\n[axes]\nwidth = [8, 4.5]\n', ["cell width=4.5", "--width"]),
        ("a misspelt procedure", 'name = "m"\n[axes]\nprocedure = ["seqential"]\n', ["cell procedure=seqential", "--procedure"]),
        ("a learning rate of nan", 'name = "m"\n[axes]\nlr = [nan]\n', ["cell lr=nan", "--lr"]),
        ("a negative width", 'name = "m"\n[axes]\nwidth = [-4, 0]\n', ["cell width=-4", "--width"]),
        ("a train size that is no size", 'name = "m"\n[axes]\ntrain-size = ["lots"]\n', ["cell train-size=lots", "--train-size"]),
        ("two parts writing one export file", 'name = "m"\nexport = "same.jsonl"\n[parts.a]\naxes.seed = [0]\n'
         '[parts.b]\naxes.seed = [1]\n', ["parts.b.export", "both write"]),
    ]
    for what, text, needles in cases:
        path = os.path.join(tmp, "bad.toml")
        with open(path, "w") as f:
            f.write(text)
        out = sweep("run", path, "--db", db, "--workers", "1")
        message = out.stderr.strip()
        check(out.returncode == 2 and all(n in message for n in needles),
              f"refused {what}, exit 2, naming the key", message.splitlines()[-1] if message else f"exit {out.returncode}")
    check(not os.path.exists(db), "nothing ran: no results database was created")
    out = sweep("run", path, "--db", db, "--scheduler", "")
    check(out.returncode == 2 and "--scheduler" in out.stderr, "--scheduler '' refused, exit 2", out.stderr.strip())
    hang = os.path.join(tmp, "hang.sh")
    with open(hang, "w") as f:
        f.write("#!/bin/sh\nsleep 300\n")
    os.chmod(hang, 0o755)
    began = time.time()
    out = sweep("list", path, "--binary", hang, env=dict(os.environ, BLOCKWISE_SWEEP_BINARY_TIMEOUT="1"))
    check(out.returncode == 2 and "did not answer" in out.stderr and time.time() - began < 10
          and not any(hang in open(f"/proc/{p}/cmdline").read() for p in os.listdir("/proc") if p.isdigit()
                      and os.path.exists(f"/proc/{p}/cmdline")),
          "a --binary that hangs on train --help: refused after the timeout, its process killed", out.stderr.strip())


def databases_and_lines(tmp):
    """Databases that are not ours, export lines that are not the cells', paths relative to the spec."""
    print("-- bad databases, export lines and paths: one-line errors, nothing written", flush=True)
    folder = os.path.join(tmp, "lines")
    os.makedirs(folder)
    spec = os.path.join(folder, "lines.toml")
    with open(spec, "w") as f:
        f.write('name = "lines"\nexport = "out/{part}.jsonl"\n[base]\nprofile = "none"\nmodules = 2\n'
                '[axes]\nwidth = [4, 8]\n')
    os.makedirs(os.path.join(folder, "out"))
    export = os.path.join(folder, "out", "main.jsonl")
    good = {"key": "width=4", "command": "blockwise train --modules 2 --width 4 --profile none --threads 1 --quiet",
            "last": "n/a", "best": None, "peakBytes": "big", "seconds": "slow"}
    other = {"key": "width=8", "command": "blockwise train --profile none --modules 3 --width 8"}
    with open(export, "w") as f:
        f.write(json.dumps(good) + "\n" + json.dumps(other) + "\n")
    db = os.path.join(folder, "lines.sqlite")
    out = sweep("list", spec, "--db", db)
    check(out.returncode == 0 and "1/2 cells done" in out.stdout and "width=8" in out.stderr and "--modules 3" in out.stderr
          and "not counted as done" in out.stderr,
          "an export line run with other options is not counted done (warned); one differing only in order, "
          "--threads and --quiet is", (out.stdout + out.stderr).strip())
    out = sweep("report", spec, "--db", db, "--out", os.path.join(folder, "report"))
    check(out.returncode == 0 and "Traceback" not in out.stderr, "report takes export lines with non-numeric fields",
          out.stderr.strip()[-300:])
    check(not os.path.exists(db), "list and report create no database")
    with open(export, "a") as f:
        f.write('{"key": "width=16", \n')
    for command in ("list", "export"):
        out = sweep(command, spec, "--db", db)
        check(out.returncode == 2 and f"{export}:3" in out.stderr and "Traceback" not in out.stderr,
              f"{command}: a malformed export line is an error naming the file and line", out.stderr.strip())
    not_sqlite = os.path.join(folder, "notes.txt")
    with open(not_sqlite, "w") as f:
        f.write("hello\n")
    foreign = os.path.join(folder, "foreign.sqlite")
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE songs (title TEXT)")
    for path, needle in [(not_sqlite, "not a SQLite database"), (foreign, "another application's database (tables songs)")]:
        outs = [sweep(c, spec, "--db", path, "--no-check") if c == "list" else sweep(c, spec, "--db", path)
                for c in ("list", "report", "export")]
        outs.append(sweep("run", spec, "--db", path, "--workers", "1"))
        check(all(o.returncode == 2 and needle in o.stderr and "Traceback" not in o.stderr for o in outs),
              f"run, list, report, export refuse {os.path.basename(path)}: '{needle}'", outs[-1].stderr.strip())
    with sqlite3.connect(foreign) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    check(tables == ["songs"], "no table was added to the other application's database", ", ".join(tables))
    plain = os.path.join(folder, "plain.toml")
    with open(plain, "w") as f:
        f.write('name = "plain"\n[axes]\nwidth = [4]\n')
    out = sweep("run", plain, "--db", os.path.join(folder, "x.sqlite"), "--scheduler", "tcp://127.0.0.1:9",
                "--connect-timeout", "2s")
    check(out.returncode == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in out.stderr
          and "Traceback" not in out.stderr, "an unreachable --scheduler: one line naming the address", out.stderr.strip())
    relative = os.path.join(folder, "relative.toml")
    with open(relative, "w") as f:
        f.write('name = "relative"\n[axes]\nprofile = ["prof/none.json"]\n')
    out = sweep("list", relative, "--cells")
    check(out.returncode == 2 and os.path.join(folder, "prof", "none.json") in out.stderr and "profile=prof/none.json" in out.stderr,
          "a relative profile path in a spec is taken relative to the spec's folder", out.stderr.strip())


def main():
    tmp = tempfile.mkdtemp(prefix="sweep-test-")
    scratch = os.path.join(tmp, "scratch")
    malformed(tmp)
    databases_and_lines(tmp)

    print("-- a 6-cell sweep on a LocalCluster of 2 worker processes", flush=True)
    spec = os.path.join(tmp, "six.toml")
    with open(spec, "w") as f:
        f.write('name = "six"\nkey = "{procedure}|{seed}"\n' + BASE
                + '[axes]\nseed = [0, 1, 2]\nprocedure = ["sequential", "parallel"]\n')
    db = os.path.join(tmp, "six.sqlite")
    listed = sweep("list", spec, "--db", db)
    check(listed.returncode == 0 and "0/6 cells done" in listed.stdout, "the spec expands to 6 cells", listed.stdout.strip())
    log = open(os.path.join(tmp, "driver-1.log"), "w")
    driver = subprocess.Popen([SWEEP, "run", spec, "--db", db, "--workers", "2", "--scratch", scratch],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def a_running_cell():
        if not os.path.exists(db):
            return None
        try:
            for key, row in rows(db).items():
                if row["status"] == "running":
                    open_attempts = [a for a in attempts(db).get(key, []) if a["outcome"] is None]
                    if open_attempts:
                        return key, open_attempts[-1]["pid"]
        except sqlite3.OperationalError:
            return None
        return None
    found = wait_for(a_running_cell, 120)
    if not check(found is not None, "a cell is running"):
        driver.kill()
        return finish(tmp)
    victim, worker_pid = found
    time.sleep(1.0)  # well inside the cell (each takes a few seconds)
    still = rows(db)[victim]["status"] == "running"
    os.kill(worker_pid, signal.SIGKILL)
    check(still, f"killed worker process {worker_pid} (kill -9) while it ran cell {victim}")

    # Dask runs the cell again on a worker (the restarted one or the other); once that second
    # attempt has started, and cells are still to do, the driver is killed.
    def victim_retried_and_some_left():
        if driver.poll() is not None:
            return "exited"
        r, tried = rows(db), attempts(db)
        done = [k for k, v in r.items() if v["status"] == "done"]
        return len(tried.get(victim, [])) >= 2 and 0 < len(done) < 6 and r
    state = wait_for(victim_retried_and_some_left, 180, step=0.1)
    if state == "exited" or not state:
        check(False, "Dask ran the killed worker's cell again while cells were left", "cells too fast?")
        driver.kill()
        return finish(tmp)
    os.kill(driver.pid, signal.SIGKILL)  # the driver process alone, as a user's kill -9 would
    driver.wait()
    log.close()
    snapshot = rows(db)
    tried = tried_1 = attempts(db)
    done_1 = {k for k, v in snapshot.items() if v["status"] == "done"}
    running_1 = {k for k, v in snapshot.items() if v["status"] == "running"}
    print(f"   driver killed (kill -9) with {len(done_1)} cells done, {len(running_1)} running", flush=True)
    second = tried[victim][1]
    check(tried[victim][0]["outcome"] == "worker died" and second["pid"] != worker_pid,
          "Dask ran the killed worker's cell again on a worker: attempt 1 'worker died', attempt 2 on another worker process",
          f"attempt 2 on {second['worker']}, {second['outcome'] or 'running'} when the driver died")
    with sqlite3.connect(db) as c:
        integrity = c.execute("PRAGMA integrity_check").fetchone()[0]
    complete = all(r["command"] and r["options"] and (r["status"] != "done" or (r["report"] and r["line"] and r["ended"]))
                   and r["attempts"] == len(tried.get(k, [])) for k, r in snapshot.items())
    check(integrity == "ok" and complete, "after the driver's kill the database holds whole rows only, attempts = attempt rows",
          f"integrity {integrity}; statuses {sorted(r['status'] for r in snapshot.values())}")
    worker_pids = {a["pid"] for tries in tried.values() for a in tries}

    def alive(pid):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
    left = wait_for(lambda: not processes_under(scratch) and not any(alive(p) for p in worker_pids) and "none", 20)
    check(left == "none", "no worker process (pids " + ", ".join(map(str, sorted(worker_pids))) + ") or blockwise process "
          "outlived the driver", f"still: binaries {processes_under(scratch)}, workers {[p for p in worker_pids if alive(p)]}")
    try:
        os.killpg(driver.pid, signal.SIGKILL)  # whatever is left of its process group, so the test goes on
    except ProcessLookupError:
        pass

    print("-- the driver run again finishes only what was left", flush=True)
    # ... and a worker is killed again, so that a cell is retried by Dask to the end within one run.
    log_path = os.path.join(tmp, "driver-2.log")
    with open(log_path, "w") as log:
        driver = subprocess.Popen([SWEEP, "run", spec, "--db", db, "--workers", "2", "--scratch", scratch],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        def a_new_attempt():
            for key, tries in attempts(db).items():
                if tries[-1]["outcome"] is None and tries[-1]["run"] != snapshot[key]["run"]:
                    return key, tries[-1]["pid"]
            return None
        found = wait_for(a_new_attempt, 120)
        victim_2 = None
        if check(found is not None, "the second run starts the cells left"):
            victim_2, pid_2 = found
            time.sleep(1.0)
            os.kill(pid_2, signal.SIGKILL)
            print(f"   killed worker process {pid_2} (kill -9) while it ran cell {victim_2}", flush=True)
        try:
            code = driver.wait(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            code = "timeout"
    with open(log_path) as f:
        out_text = f.read()
    check(code == 0, "the second run exits 0", f"exit {code}")
    check(f"6 cells, {len(done_1)} done, {6 - len(done_1)} to run" in out_text,
          f"it skips the {len(done_1)} done cells and runs the other {6 - len(done_1)}")
    final, tried = rows(db), attempts(db)
    check(len(final) == 6 and all(r["status"] == "done" for r in final.values()), "all 6 cells are done, one row each")
    check(all(final[k]["ended"] == snapshot[k]["ended"] and final[k]["run"] == snapshot[k]["run"]
              and final[k]["attempts"] == snapshot[k]["attempts"] for k in done_1),
          "the cells done before the kill were not run again (same run, end time and attempts)")
    check(all(sum(a["outcome"] == "done" for a in tried[k]) == 1 for k in final), "every cell has exactly one done attempt")
    # attempts: one more than at the driver's death for the cells not done then (the interrupted
    # attempt closed as "driver stopped"), unchanged for those done
    before = {k: [a["outcome"] or "driver stopped" for a in v] for k, v in tried_1.items()}
    expected = {k: (before.get(k, []) if k in done_1 else before.get(k, []) + ["done"]) for k in final}
    if victim_2:
        expected[victim_2] = before.get(victim_2, []) + ["worker died", "done"]
    actual = {k: [a["outcome"] for a in tried.get(k, [])] for k in final}
    check(actual == expected and all(final[k]["attempts"] == len(actual[k]) for k in final),
          "every cell's attempts are counted: the killed worker's cell and the cells running at the driver's death "
          "have one attempt per try", "; ".join(f"{k}: {final[k]['attempts']} ({', '.join(v)})" for k, v in sorted(actual.items())))
    for key in {victim, victim_2} - {None}:
        check(actual[key][-1] == "done" and "worker died" in actual[key] and final[key]["attempts"] >= 2,
              f"a killed worker's cell, {key}: done once, attempts {final[key]['attempts']}")
    again = sweep("run", spec, "--db", db, "--workers", "2", "--scratch", scratch)
    check(again.returncode == 0 and "6 cells, 6 done, 0 to run" in again.stdout, "a third run has nothing to do")
    check(not os.path.exists(scratch) or not any(os.scandir(os.path.join(scratch, "six", "main"))),
          "the cells' scratch directories (stores) were deleted after success")

    print("-- a cell that fails on its own", flush=True)
    bad = os.path.join(tmp, "budget.toml")
    with open(bad, "w") as f:
        f.write('name = "budget"\n' + BASE.replace('profile = "none"', 'profile = "rpi-zero-2w"')
                + '[[cells]]\nbudget = "10KB"\n')
    bad_db = os.path.join(tmp, "budget.sqlite")
    out = sweep("run", bad, "--db", bad_db, "--workers", "1", "--scratch", scratch)
    r = rows(bad_db).get("budget=10KB", {})
    check(out.returncode == 1 and r.get("status") == "failed" and r.get("exit_code") == 3 and r.get("attempts") == 1
          and "budget" in (r.get("error") or ""),
          "a budget that cannot be met: failed, exit code 3, the error recorded, 1 attempt (not retried)",
          f"exit {out.returncode}, row {r.get('status')} exit_code {r.get('exit_code')} attempts {r.get('attempts')}")
    out = sweep("run", bad, "--db", bad_db, "--workers", "1", "--scratch", scratch)
    check("1 failed cells skipped" in out.stdout and rows(bad_db)["budget=10KB"]["attempts"] == 1,
          "a rerun skips the failed cell (until --retry-failed)")

    finished_cell_kept(tmp, scratch)

    print("-- an existing cluster: dask scheduler + dask worker, workers without this repository", flush=True)
    external(tmp, scratch)

    print("-- report", flush=True)
    out_dir = os.path.join(tmp, "report")
    out = sweep("report", spec, "--db", db, "--out", out_dir)
    with open(os.path.join(out_dir, "six.csv")) as f:
        table = list(csv.DictReader(f))
    check(out.returncode == 0 and len(table) == 6 and all(float(t["last %"]) > 0 for t in table)
          and os.path.exists(os.path.join(out_dir, "six.svg")) and os.path.exists(os.path.join(out_dir, "six.md")),
          "report writes a CSV of the 6 cells, a Markdown table and an SVG plot")
    return finish(tmp)


def finished_cell_kept(tmp, scratch):
    """A finished cell whose worker dies afterwards is not run again nor undone (Dask recomputes a
    lost result only if the driver still holds its future); a symlinked --db is locked too."""
    print("-- a finished cell's worker killed: the cell stays done, one attempt", flush=True)
    spec = os.path.join(tmp, "kept.toml")
    with open(spec, "w") as f:
        f.write('name = "kept"\nkey = "{epochs}"\n' + BASE + '[[cells]]\nepochs = 1\ntrain-size = 500\n'
                '[[cells]]\nepochs = 8\n')
    db = os.path.join(tmp, "kept.sqlite")
    log_path = os.path.join(tmp, "driver-kept.log")
    with open(log_path, "w") as log:
        driver = subprocess.Popen([SWEEP, "run", spec, "--db", db, "--workers", "2", "--scratch", scratch],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        short = wait_for(lambda: os.path.exists(db) and rows(db).get("1", {}).get("status") == "done"
                         and rows(db).get("8", {}).get("status") == "running" and attempts(db)["1"], 90, step=0.1)
        if check(short is not None, "the short cell is done while the long one runs"):
            os.kill(short[0]["pid"], signal.SIGKILL)
            print(f"   killed worker process {short[0]['pid']} (kill -9), which ran the short cell", flush=True)
            link = os.path.join(tmp, "kept-link.sqlite")
            os.symlink(db, link)
            out = sweep("run", spec, "--db", link, "--workers", "1", "--scratch", scratch)
            check(out.returncode != 0 and "another 'tools/sweep run' is using" in (out.stdout + out.stderr),
                  "a second driver through a symlinked --db is refused by the lock", (out.stdout + out.stderr).strip()[-200:])
        try:
            code = driver.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            code = "timeout"
    r, tried = rows(db), attempts(db)
    check(code == 0 and r["8"]["status"] == "done", "the run finishes, exit 0", f"exit {code}")
    check(r["1"]["status"] == "done" and r["1"]["attempts"] == 1 and len(tried["1"]) == 1 and r["1"]["report"],
          "the short cell stays done once, 1 attempt, its report kept",
          f"{r['1']['status']}, attempts {r['1']['attempts']}, attempt rows {len(tried['1'])}")


def stop_on_cluster(address, scratch, tmp):
    """SIGTERM to a driver on an external cluster: the cells' binaries on the workers are killed."""
    spec = os.path.join(tmp, "stop.toml")
    with open(spec, "w") as f:
        f.write('name = "stop"\n' + BASE.replace("epochs = 4", "epochs = 60") + '[axes]\nseed = [0]\n')
    db = os.path.join(tmp, "stop.sqlite")
    driver = subprocess.Popen([SWEEP, "run", spec, "--db", db, "--scheduler", address, "--scratch", scratch],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = wait_for(lambda: os.path.exists(db) and [a for t in attempts(db).values() for a in t if a["outcome"] is None]
                     and processes_under(os.path.join(scratch, "stop")), 60, step=0.1)
    if not check(bool(found), "a cell runs on the cluster"):
        driver.kill()
        return
    tried = attempts(db)["seed=0"]
    driver.send_signal(signal.SIGTERM)
    out = driver.communicate(timeout=60)[0]
    left = wait_for(lambda: not processes_under(os.path.join(scratch, "stop")) and "none", 10)
    check(driver.returncode == 130 and left == "none" and "Traceback" not in out,
          "SIGTERM to the driver (--scheduler): exit 130, the cell's binary on the worker killed",
          f"exit {driver.returncode}; still running: {processes_under(os.path.join(scratch, 'stop'))}")
    check(tried[-1]["scratch"].endswith(tried[-1]["id"]), "each attempt has a scratch directory of its own",
          tried[-1]["scratch"])
    r = rows(db)["seed=0"]
    check(r["status"] == "interrupted", "the stopped cell is interrupted (it runs again next time)", r["status"])


def external(tmp, scratch):
    """`dask scheduler` and `dask worker` (on this machine, loopback only), started outside the
    repository and without PYTHONPATH, as on another machine; tools/sweep run --scheduler."""
    bin_dir = os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    state = os.path.join(tmp, "cluster")
    os.makedirs(state)
    address_file = os.path.join(state, "scheduler.json")
    logs = open(os.path.join(state, "cluster.log"), "w")
    started = []
    try:
        started.append(subprocess.Popen([os.path.join(bin_dir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                         "--no-dashboard", "--scheduler-file", address_file],
                                        cwd=state, env=env, stdout=logs, stderr=subprocess.STDOUT))
        if not check(wait_for(lambda: os.path.exists(address_file), 60) is not None, "dask scheduler started"):
            return
        time.sleep(0.5)
        with open(address_file) as f:
            address = json.load(f)["address"]
        started.append(subprocess.Popen([os.path.join(bin_dir, "dask"), "worker", "--scheduler-file", address_file,
                                         "--nthreads", "1", "--nworkers", "2", "--no-dashboard"],
                                        cwd=state, env=env, stdout=logs, stderr=subprocess.STDOUT))
        spec = os.path.join(tmp, "two.toml")
        with open(spec, "w") as f:
            f.write('name = "two"\n' + BASE.replace("epochs = 4", "epochs = 1") + '[axes]\nseed = [0, 1]\n')
        db = os.path.join(tmp, "two.sqlite")
        time.sleep(3)  # the workers register
        out = sweep("run", spec, "--db", db, "--scheduler", address, "--scratch", scratch, timeout=300)
        r = rows(db) if os.path.exists(db) else {}
        workers = {v["worker"] for v in r.values()}
        check(out.returncode == 0 and len(r) == 2 and all(v["status"] == "done" for v in r.values()),
              f"tools/sweep run --scheduler {address}: both cells done on the cluster's workers",
              "; ".join(sorted(workers)) if out.returncode == 0 else (out.stdout + out.stderr).strip()[-400:])
        stop_on_cluster(address, scratch, tmp)
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()


def finish(tmp):
    if FAILED:
        print(f"(logs and databases kept in {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"sweep: {len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
