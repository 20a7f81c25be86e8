"""The driver of `tools/sweep run`: cells to Dask, outcomes into the results database.

Faults and what happens:
- a worker process dies mid-cell (kill -9, out of memory, machine lost): Dask's scheduler moves
  the cell to another worker (up to distributed.scheduler.allowed-failures times, then the cell
  fails with KilledWorker); every attempt put an "attempt started" event on a Dask Queue before
  its binary started, so `attempts` counts them all, and the cell's row is written once, when it
  ends;
- a cell fails on its own: exit 2 (bad configuration) and 3 (budget cannot be met) are recorded as
  failed at once; any other failure (exit 1, a signal) is tried again up to --retries more times;
- the driver dies: every change to the database was one transaction; on the next run cells left
  `running` become `interrupted` (their open attempt closed as "driver stopped") and are run again;
  done cells are skipped, failed ones too unless --retry-failed;
- a finished cell's worker dies: nothing (its future was released as soon as its result was read,
  so Dask does not run it again; and an attempt of a done cell is never recorded);
- the driver is stopped cleanly (SIGINT/SIGTERM/SIGHUP): queued cells are cancelled and the running
  binaries killed on their workers (stop_attempts); killed with kill -9 on an external cluster,
  its running binaries finish in their own attempt directories and their results are dropped.
"""
import fcntl, json, os, shlex, signal, subprocess, sys, time, uuid

from . import lines as result_lines
from . import task as cell_task
from .db import Results, now

NO_RETRY = {"configuration", "budget", "setup", "stopped"}


class Unreachable(Exception):
    """The --scheduler cannot be reached."""


def commit_of(root):
    if os.environ.get("BLOCKWISE_COMMIT"):
        return os.environ["BLOCKWISE_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Lock:
    """One driver per database at a time."""

    def __init__(self, db_path):
        self.path = db_path + ".lock"
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip()
            raise SystemExit(f"sweep: another 'tools/sweep run' is using {db_path} ({holder or 'unknown pid'}); "
                             "wait for it or stop it first")
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()


def sync_exports(db, parts, flags, quiet=False):
    """Import each part's export lines (they count as done) and return {part: lines}. A line whose
    command is not the cell's (apart from --threads, --quiet, --json, --store, --report and the
    order of the options) does not count: a warning names it and the cell runs again."""
    existing = {}
    for part in parts:
        if not part.export:
            continue
        found = result_lines.read(part.export)
        existing[part.name] = found
        cells = {c.key: c for c in part.cells}
        known = [l for l in found if l["key"] in cells]
        if len(known) < len(found) and not quiet:
            print(f"sweep: {len(found) - len(known)} lines of {part.export} are not cells of part '{part.name}' "
                  "(kept in the file as they are)", flush=True)
        agreeing = []
        for line in known:
            difference = result_lines.command_differs(line, cells[line["key"]], flags)
            if difference:
                print(f"sweep: warning: {part.export}: the line of cell {part.name}/{line['key']} was run with other "
                      f"options than the spec gives ({difference}): not counted as done", file=sys.stderr, flush=True)
            else:
                agreeing.append(line)
        added = db.import_lines(part.name, agreeing, lambda key: cells[key].options)
        if added and not quiet:
            print(f"sweep: {added} done cells of part '{part.name}' imported from {part.export}", flush=True)
    return existing


def export(db, parts, existing=None):
    for part in parts:
        if not part.export:
            continue
        found = existing.get(part.name) if existing is not None else result_lines.read(part.export)
        done = {key: json.loads(r["line"]) for (_, key), r in db.rows(part.name).items()
                if r["status"] == "done" and r["line"]}
        count, changed = result_lines.write(part.export, found or [], done, [c.key for c in part.cells])
        print(f"sweep: {part.export}: {count} result lines{'' if changed else ' (unchanged)'}", flush=True)


def run(spec, parts, args, root):
    db_path = args.db
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
    lock = Lock(os.path.realpath(db_path))  # a symlinked --db is the same database
    db = Results(db_path)
    stale = db.interrupt_stale()
    if stale:
        print(f"sweep: {stale} cells were running when the last driver stopped: they run again", flush=True)
    existing = sync_exports(db, parts, spec.flags)
    rows = db.rows()
    todo, skipped_failed, changed = [], 0, 0
    for part in parts:
        for cell in part.cells:
            row = rows.get((part.name, cell.key))
            if row is not None and row["status"] == "done":
                if row["worker"] != "imported" and json.loads(row["options"]) != cell.options:
                    changed += 1
                continue
            if row is not None and row["status"] == "failed" and not args.retry_failed:
                skipped_failed += 1
                continue
            todo.append(cell)
    total = sum(len(p.cells) for p in parts)
    done_before = total - len(todo) - skipped_failed
    if changed:
        print(f"sweep: warning: {changed} done cells were run with other options than the spec now gives "
              "(the key did not change); delete their rows from the database to run them again", flush=True)
    if skipped_failed:
        print(f"sweep: {skipped_failed} failed cells skipped (see the database; --retry-failed runs them again)",
              flush=True)
    if args.max_cells is not None:
        todo = todo[:args.max_cells]
    print(f"sweep: {spec.name} ({', '.join(p.name for p in parts)}): {total} cells, {done_before} done, "
          f"{len(todo)} to run; results in {db_path}", flush=True)
    if not todo:
        export(db, parts, existing)
        return 0 if not skipped_failed else 1
    return Driver(spec, parts, args, root, db, existing).drive(todo)


def abandon_startup():
    """A LocalCluster half started cannot be closed cleanly (Dask's own exit hook then prints a
    traceback): its processes are killed and the driver leaves at once, exit 130."""
    try:
        import psutil
        # (not multiprocessing's resource tracker: it goes by itself, and killed it prints tracebacks)
        children = [c for c in psutil.Process().children(recursive=True)
                    if "resource_tracker" not in " ".join(c.cmdline())]
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(children, timeout=5)
    except Exception:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def shipped(function):
    """`function` wrapped so that Dask sends it by value: Dask pickles a task graph with plain pickle
    (functions by reference: the scheduler and workers would have to import sweeplib) unless that
    fails; a lambda makes it fail, and cloudpickle then ships the lambda and, since task.py is
    registered by value, run_cell and its module's helpers with it."""
    return lambda job: function(job)


class Driver:
    def __init__(self, spec, parts, args, root, db, existing):
        self.spec, self.parts, self.args, self.root, self.db, self.existing = spec, parts, args, root, db, existing
        self.commit = commit_of(root)
        from .spec import binary_version
        self.version = binary_version(args.binary)

    def job(self, cell):
        env = {}
        if os.environ.get("BLOCKWISE_MNIST5K"):
            env["BLOCKWISE_MNIST5K"] = os.environ["BLOCKWISE_MNIST5K"]
        return {"sweep": self.spec.name, "part": cell.part, "key": cell.key, "arguments": cell.arguments(),
                "binary": self.args.binary, "profiles": self.args.profiles, "scratch": self.args.scratch,
                "keep_stores": self.args.keep_stores, "queue": self.queue_name, "env": env}

    def connect(self):
        import cloudpickle
        import dask
        from distributed import Client, LocalCluster
        cloudpickle.register_pickle_by_value(cell_task)  # workers need Dask, not this repository
        if self.args.scheduler:
            try:
                client = Client(self.args.scheduler, timeout=self.args.connect_timeout)
            except (OSError, TimeoutError, ValueError) as error:
                raise Unreachable(f"cannot reach the Dask scheduler at {self.args.scheduler} within "
                                  f"{self.args.connect_timeout} ({type(error).__name__}): start it with `dask scheduler` "
                                  "and its workers with `dask worker ADDRESS --nthreads 1`, check the address and that "
                                  "its port is open from here, or wait longer with --connect-timeout")
            return client, None, self.args.scheduler
        n = self.args.workers or os.cpu_count() or 1
        # multiprocessing's resource tracker (a process of its own) warns of "leaked" semaphores
        # when a LocalCluster is stopped while it starts: nothing is leaked that matters
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                              "ignore:resource_tracker:UserWarning"]))
        dask.config.set({"distributed.scheduler.allowed-failures": self.args.allowed_failures})
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster, f"LocalCluster({n} worker processes x 1 thread)"

    def record_started(self, run_id, cells, pending, running, event):
        """An attempt-started event: recorded unless its cell is no longer submitted in this run
        (its result was read already: Dask ran a finished task again) or done."""
        key = (event["part"], event["key"])
        if key not in pending:
            return
        cell = cells[key]
        self.scratches[key] = event["scratch"]  # the cell's latest attempt
        if self.db.attempt_started(run_id, cell.part, cell.key, self.command_text(cell, event),
                                   json.dumps(cell.options), event):
            running[key] = event["worker"]

    def drive(self, todo):
        from distributed import Queue
        args, db = self.args, self.db
        self.queue_name = f"blockwise-sweep-{uuid.uuid4().hex}"
        self.scratches = {}  # cell -> the scratch directory of its latest attempt on its worker
        stop = {"signal": None}

        def on_signal(number, frame):
            stop["signal"] = number
            raise KeyboardInterrupt
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, on_signal)
        client = cluster = None
        run_id, futures, pending = None, {}, {}  # pending: cell -> its future not read yet
        try:
            client, cluster, where = self.connect()
            workers = client.scheduler_info().get("workers", {})
            missing = [m for m in client.run(cell_task.check_worker, args.binary, args.profiles).values() if m]
            if missing:
                print("sweep: error: workers cannot run cells:\n  " + "\n  ".join(missing), file=sys.stderr)
                return 2
            queue = Queue(self.queue_name, client=client)
            run_id = db.start_run(self.spec.path, [p.name for p in self.parts], where, args.binary, self.commit,
                                  len(todo), self.version)
            print(f"sweep: run {run_id} on {where}, {len(workers)} workers; binary {args.binary}"
                  + (f" (version {self.version})" if self.version else ""), flush=True)
            cells = {}
            for cell in todo:
                cells[(cell.part, cell.key)] = cell
                future = self.submit(client, cell, 0)
                futures[future] = (cell, 0)
                pending[(cell.part, cell.key)] = future
            del future
            running, finished, failed, seconds = {}, 0, 0, []  # running: cell -> worker of its last attempt
            started_at, last_print, last_state = time.time(), 0.0, None
            while futures:
                time.sleep(0.5)
                for event in queue.get(batch=True):
                    self.record_started(run_id, cells, pending, running, event)
                ready = [f for f in futures if f.done()]
                while ready:
                    future = ready.pop()
                    for event in queue.get(batch=True):  # events of this attempt arrive first
                        self.record_started(run_id, cells, pending, running, event)
                    cell, retry = futures.pop(future)
                    pending.pop((cell.part, cell.key), None)
                    result = self.outcome(future)
                    # Forget the task at once: a finished task kept referenced is run again by Dask
                    # when the worker holding its result dies.
                    future.release()
                    del future
                    running.pop((cell.part, cell.key), None)
                    if (result["status"] == "failed" and result.get("kind") not in NO_RETRY
                            and result.get("kind") != "worker-deaths" and retry < args.retries):
                        print(f"sweep: {cell.part}/{cell.key}: {cell_task.describe_exit(result.get('exit_code'))}: "
                              f"{cell_task.headline(result.get('error'), result.get('exit_code'))}; "
                              f"trying again ({retry + 1} of {args.retries})", flush=True)
                        self.close_attempt(result)
                        future = self.submit(client, cell, retry + 1)
                        futures[future] = (cell, retry + 1)
                        pending[(cell.part, cell.key)] = future
                        del future
                        continue
                    line = None
                    if result["status"] == "done":
                        try:
                            line = result_lines.result_line(cell, result["report"], result["seconds"], self.commit)
                        except (ValueError, KeyError, IndexError, TypeError) as error:
                            result.update(status="failed", kind="runtime", exit_code=0,
                                          error=f"the report JSON could not be read: {error!r}")
                    db.finish(run_id, cell.part, cell.key, result.get("command") or self.command_text(cell, None),
                              json.dumps(cell.options), result, line)
                    if result["status"] == "done":
                        finished += 1
                        seconds.append(result["seconds"])
                        row = db.row(cell.part, cell.key)
                        summary = f"last {line['last']}%, peak {line['peakBytes'] / 2 ** 20:.1f} MiB"
                        print(f"sweep: done {cell.part}/{cell.key} ({summary}; {result['seconds']:.1f} s, "
                              f"attempts {row['attempts']})", flush=True)
                    else:
                        failed += 1
                        print(f"sweep: FAILED {cell.part}/{cell.key}: "
                              f"{cell_task.describe_exit(result.get('exit_code'), result.get('kind'))}: "
                              f"{cell_task.headline(result.get('error'), result.get('exit_code'), result.get('kind'))}",
                              flush=True)
                alive = set(client.scheduler_info().get("workers", {}))
                busy = sum(1 for w in running.values() if w in alive)  # a dead worker's cell waits to run again
                state = (finished, busy, failed)
                if state != last_state or time.time() - last_print > 30:
                    last_state, last_print = state, time.time()
                    self.progress(started_at, len(todo), finished, busy, failed, seconds, len(alive))
            db.end_run(run_id, finished, failed, "finished")
            export(db, self.parts, self.existing)
            print(f"sweep: run {run_id} finished: {finished} done, {failed} failed in {duration(time.time() - started_at)}; "
                  f"results in {args.db}", flush=True)
            return 0 if failed == 0 else 1
        except KeyboardInterrupt:
            why = f"signal {stop['signal']}" if stop["signal"] else "interrupted"
            print(f"sweep: stopping ({why}); cells not finished will run again next time", file=sys.stderr, flush=True)
            if client is None:
                abandon_startup()  # stopped while the cluster started: nothing ran, nothing to record
            left = [cell for cell, _ in futures.values()]
            self.stop_cells(client, futures)
            for cell in left:
                db.mark_interrupted(cell.part, cell.key)
            if run_id is not None:
                db.end_run(run_id, None, None, "stopped")
                export(db, self.parts, self.existing)
            return 130
        finally:
            for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(number, signal.SIG_IGN)  # closing is not interrupted
            if futures:
                self.stop_cells(client, futures)  # an unexpected error: the cells' binaries go too
            try:
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()
            except Exception:
                pass

    def stop_cells(self, client, futures):
        """A clean stop: the queued cells are cancelled and the running ones' binaries killed on
        their workers (an external cluster's workers outlive the driver; a LocalCluster's die with it)."""
        if client is None or not futures:
            return
        try:
            scratches = [self.scratches[(c.part, c.key)] for c, _ in futures.values() if (c.part, c.key) in self.scratches]
            client.cancel(list(futures), force=True)
            if scratches:
                killed = client.run(cell_task.stop_attempts, scratches, wait=True)
                count = len({pid for pids in killed.values() for pid in pids})  # workers of a machine share it
                if count:
                    print(f"sweep: killed {count} running cells' binaries on the workers", file=sys.stderr, flush=True)
        except Exception as error:  # the scheduler is gone: nothing more can be done from here
            print(f"sweep: warning: could not stop the cells on the workers ({type(error).__name__}: {error})",
                  file=sys.stderr, flush=True)
        futures.clear()

    def submit(self, client, cell, retry):
        key = f"blockwise-cell-{self.spec.name}-{cell_task.digest(cell.part + '/' + cell.key)}-{retry}-{self.queue_name[-8:]}"
        return client.submit(shipped(cell_task.run_cell), self.job(cell), key=key, pure=False)

    def command_text(self, cell, event):
        scratch = event["scratch"] if event else cell_task.scratch_for(self.job(cell))
        return shlex.join(cell_task.command_for(self.job(cell), scratch))

    def close_attempt(self, result):
        with self.db.transaction() as tx:
            tx.execute("UPDATE attempts SET outcome = ?, ended = ? WHERE id = ?",
                       (f"failed (exit {result.get('exit_code')}), retried", now(), result.get("id")))

    def outcome(self, future):
        """The task's result, or a failed result from the exception Dask raised."""
        try:
            return future.result()
        except Exception as error:  # KilledWorker, or the task raised on the worker
            from distributed import KilledWorker
            now = time.time()
            if isinstance(error, KilledWorker):
                return {"status": "failed", "kind": "worker-deaths", "exit_code": None, "ended": now,
                        "error": f"the cell's worker died too often ({error}); Dask gives up after "
                                 "distributed.scheduler.allowed-failures deaths (--allowed-failures for a LocalCluster)"}
            return {"status": "failed", "kind": "runtime", "exit_code": None, "ended": now,
                    "error": f"the task raised on the worker: {type(error).__name__}: {error}"}

    def progress(self, started_at, total, finished, running, failed, seconds, workers):
        elapsed = time.time() - started_at
        left = total - finished - failed
        eta = ""
        if seconds and left:
            per_cell = sum(seconds) / len(seconds)
            eta = f", ETA {duration(per_cell * left / max(1, workers))}"
        print(f"sweep: progress {finished}/{total} done, {running} running, {failed} failed, "
              f"{left - running} queued; {duration(elapsed)} elapsed{eta}", flush=True)
