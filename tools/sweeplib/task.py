"""What a Dask worker runs for one attempt of one cell (stdlib + distributed only: the driver ships
this module to the workers by value, so a worker machine needs Dask but not this repository).

An attempt: a fresh scratch directory of its own on the worker (<scratch>/<sweep>/<part>/<cell
digest>/<attempt id>), an "attempt started" event put on the
sweep's Dask Queue (the scheduler acknowledges it before the binary starts, so the driver counts
every attempt, including one whose worker is then killed), then `blockwise train ... --json
<scratch>/report.json --store <scratch>/cell.sqlite`, run with its parent-death signal set so
that it dies with the worker. The scratch directory is deleted afterwards unless keep_stores.
"""
import hashlib, os, shlex, shutil, signal, socket, subprocess, sys, tempfile, time, uuid

# Exit codes of blockwise (README, "Command reference").
BAD_CONFIGURATION, BUDGET_NOT_MET = 2, 3

# Run the binary through this so that it gets SIGKILL when the worker process dies (Linux
# PR_SET_PDEATHSIG; set in a fresh interpreter, not in a pre-exec hook of the threaded worker).
LAUNCHER = ("import ctypes, os, signal, sys\n"
            "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
            "os.getppid() == int(sys.argv[1]) or os._exit(137)\n"
            "os.execv(sys.argv[2], sys.argv[2:])\n")


def digest(text):
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def tail(path, limit=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            text = f.read().decode("utf-8", "replace")
        return ("..." if size > limit else "") + text
    except OSError:
        return ""


def command_for(job, scratch):
    argv = [job["binary"], "train"] + list(job["arguments"])
    if "--threads" not in argv:
        argv += ["--threads", "1"]  # one single-threaded worker per core
    return argv + ["--json", os.path.join(scratch, "report.json"), "--store", os.path.join(scratch, "cell.sqlite")]


def cell_dir(job):
    """The cell's folder on a worker; each attempt gets its own directory inside it."""
    root = job.get("scratch") or os.path.join(tempfile.gettempdir(), "blockwise-sweep")
    return os.path.join(root, job["sweep"], job["part"], digest(job["key"]))


def scratch_for(job, attempt="ATTEMPT"):
    """An attempt's own scratch directory: an orphaned attempt (its driver gone) never shares it
    with a later one, so neither deletes the other's store."""
    return os.path.join(cell_dir(job), attempt)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def clear_dead_attempts(folder, host):
    """Delete this machine's attempt directories whose worker process is gone (a killed worker's
    leftovers); those of live processes (an orphan still running) are left alone."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            with open(os.path.join(entry.path, "owner")) as f:
                owner_host, owner_pid = f.read().split()
            if owner_host == host and not alive(int(owner_pid)):
                shutil.rmtree(entry.path, ignore_errors=True)
        except (OSError, ValueError):
            pass


def headline(error, exit_code=None, kind=None):
    """One line for an attempt's error: the binary's first `error:` line, else the last non-empty
    line; signals and worker deaths said as such."""
    if kind == "worker-deaths":
        return ((error or "").strip().splitlines() or ["worker died"])[0]
    lines = [l.strip() for l in (error or "").splitlines() if l.strip()]
    body = [l for l in lines[1:]] if lines and lines[0].startswith("blockwise train failed") else lines
    first = next((l for l in body if l.startswith(("error:", "Error:"))), None)
    text = first or (body[-1] if body else (lines[-1] if lines else ""))
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = "?"
        return f"killed by signal {-exit_code} ({name})" + (f": {text}" if text and not first else "")
    return text


def describe_exit(exit_code, kind=None):
    if kind == "worker-deaths":
        return "worker died"
    if exit_code is None:
        return "no exit code"
    if exit_code < 0:
        return f"killed by signal {-exit_code}"
    return f"exit {exit_code}"


def stop_attempts(scratches):
    """Run on every worker when the driver stops: flag these attempts stopped (one not started yet
    does not start its binary) and kill the binaries of those running on this machine."""
    killed = []
    for scratch in scratches:
        if not os.path.isdir(scratch):
            continue
        try:
            with open(os.path.join(scratch, "stop"), "w"):
                pass
            with open(os.path.join(scratch, "binary.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if sys.platform.startswith("linux"):
            try:
                if os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) != os.path.realpath(scratch):
                    continue  # not the cell's binary any more
            except OSError:
                continue  # gone
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


def run_cell(job):
    """One attempt; returns a result dict (status done or failed), never raises for a cell's failure."""
    from distributed import Queue, get_worker
    try:
        worker = get_worker().address
    except ValueError:
        worker = "local"
    host, pid = socket.gethostname(), os.getpid()
    result = {"id": uuid.uuid4().hex, "host": host, "worker": worker, "pid": pid, "started": time.time()}
    scratch = scratch_for(job, result["id"])
    argv = command_for(job, scratch)
    result["command"] = shlex.join(argv)

    def failed(kind, error, exit_code=None):
        result.update(status="failed", kind=kind, error=error, exit_code=exit_code, ended=time.time())
        result["seconds"] = round(result["ended"] - result["started"], 3)
        return result

    if not os.access(job["binary"], os.X_OK):
        return failed("setup", f"the blockwise binary {job['binary']} is missing on worker {worker} ({host}): install it "
                      "at the same path on every worker machine, or pass --binary")
    if job.get("profiles") and not os.path.isdir(job["profiles"]):
        return failed("setup", f"the profiles directory {job['profiles']} is missing on worker {worker} ({host}): "
                      "copy profiles/ to the same path on every worker machine, or pass --profiles")
    clear_dead_attempts(cell_dir(job), host)  # a killed worker's leftovers on this machine
    os.makedirs(scratch)
    with open(os.path.join(scratch, "owner"), "w") as f:
        f.write(f"{host} {pid}\n")
    # Register the attempt before the binary starts: Queue.put returns once the scheduler has it.
    Queue(job["queue"]).put({"type": "started", "part": job["part"], "key": job["key"], "id": result["id"],
                             "host": host, "worker": worker, "pid": pid, "scratch": scratch,
                             "started": result["started"]})
    env = dict(os.environ)
    env.update(job.get("env") or {})
    if job.get("profiles"):
        env["BLOCKWISE_PROFILES"] = job["profiles"]
    launch = [sys.executable, "-c", LAUNCHER, str(os.getpid())] if sys.platform.startswith("linux") else []
    stdout, stderr = os.path.join(scratch, "stdout.txt"), os.path.join(scratch, "stderr.txt")
    stop_flag = os.path.join(scratch, "stop")
    code, startup = None, None
    try:
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = subprocess.Popen(launch + argv, cwd=scratch, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       env=env)
            with open(os.path.join(scratch, "binary.pid"), "w") as f:
                f.write(f"{process.pid}\n")
            if os.path.exists(stop_flag):  # the driver stopped before the pid was written
                process.kill()
            code = process.wait()
    except OSError as error:
        startup = str(error)
    try:
        if os.path.exists(stop_flag):
            return failed("stopped", "the driver stopped the attempt", code)
        if startup is not None:
            return failed("runtime", f"could not start {argv[0]}: {startup}")
        if code != 0:
            text = tail(stderr) or tail(stdout)
            if code < 0:
                kind, what = "runtime", f"killed by signal {-code} ({signal.Signals(-code).name})"
            else:
                kind = {BAD_CONFIGURATION: "configuration", BUDGET_NOT_MET: "budget"}.get(code, "runtime")
                what = f"exit code {code}"
            return failed(kind, f"blockwise train failed ({what}) on {host}:\n{text.strip()}", code)
        try:
            with open(os.path.join(scratch, "report.json")) as f:
                result["report"] = f.read()
        except OSError as error:
            return failed("runtime", f"blockwise train exited 0 but wrote no report JSON: {error}", code)
        result.update(status="done", kind="done", exit_code=0, error=None, ended=time.time())
        result["seconds"] = round(result["ended"] - result["started"], 3)
        result["scratch"] = scratch if job.get("keep_stores") else None
        return result
    finally:
        if not job.get("keep_stores"):
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                os.rmdir(cell_dir(job))  # the cell's folder, once no attempt is left in it
            except OSError:
                pass


def check_worker(binary, profiles):
    """Run on every worker before the sweep: what is missing there, or None."""
    import socket as _socket
    missing = []
    if not os.access(binary, os.X_OK):
        missing.append(f"binary {binary}")
    if profiles and not os.path.isdir(profiles):
        missing.append(f"profiles directory {profiles}")
    return f"{_socket.gethostname()}: missing {', '.join(missing)}" if missing else None
