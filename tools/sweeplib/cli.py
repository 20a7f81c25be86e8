"""tools/sweep: grids of `blockwise train` runs on Dask distributed, results in one SQLite database.

    tools/sweep run SPEC [--part P] [--scheduler tcp://HOST:8786] [--workers N] [--max-cells N] ...
    tools/sweep list SPEC [--part P] [--cells]       # validate the spec; cells done / to do
    tools/sweep report SPEC [--part P] [--out DIR]   # CSV + Markdown tables, SVG plot
    tools/sweep export SPEC [--part P]               # rewrite the spec's result-lines files

A spec is a TOML file (see README, "Sweeps", and tools/sweeplib/spec.py). The results database
is sweep-results/<spec name>.sqlite under the repository unless --db says otherwise; read it with
`sqlite3 DB 'select part, key, status, attempts, worker from cells'`.

Exit codes: 0 every selected cell done; 1 some cell failed (or a runtime error); 2 the spec or
the arguments are wrong (nothing ran); 130 stopped by a signal (rerun to resume).
"""
import argparse, json, os, shlex, signal, sys

from . import lines as result_lines
from . import spec as specs

LARGE = 10_000  # cells: above this, a warning (a typo in an axis multiplies the grid)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_binary():
    return os.environ.get("BLOCKWISE_BINARY") or os.path.join(ROOT, ".build", "release", "blockwise")


def default_profiles():
    return os.environ.get("BLOCKWISE_PROFILES") or os.path.join(ROOT, "profiles")


def add_common(p):
    p.add_argument("spec", metavar="SPEC", help="the sweep spec (a TOML file)")
    p.add_argument("--part", metavar="P", help="only this part of the spec (default: every part)")
    p.add_argument("--db", metavar="PATH", help="results database (default: sweep-results/<spec name>.sqlite in the repository)")
    p.add_argument("--binary", metavar="PATH", default=None,
                   help="the blockwise binary, at this path on the driver and on every worker "
                        "(default: $BLOCKWISE_BINARY, else <repo>/.build/release/blockwise)")


def parser():
    top = argparse.ArgumentParser(prog="tools/sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the cells not yet done on Dask",
                         description="Expand the spec's cells, skip those done, run the rest on Dask: a LocalCluster "
                                     "(one single-threaded worker process per core) or --scheduler.")
    add_common(run)
    run.add_argument("--scheduler", metavar="tcp://HOST:8786",
                     help="an existing Dask scheduler (`dask scheduler`; workers started with `dask worker ADDRESS "
                          "--nthreads 1`) instead of a LocalCluster")
    run.add_argument("--workers", type=int, metavar="N", help="LocalCluster worker processes (default: one per core)")
    run.add_argument("--max-cells", type=int, metavar="N", help="submit at most N of the cells not done")
    run.add_argument("--keep-stores", action="store_true",
                     help="keep each cell's scratch directory (store, report, stdout/stderr) on its worker; "
                          "by default it is deleted when the attempt ends")
    run.add_argument("--scratch", metavar="DIR",
                     help="root of the cells' scratch directories on each worker (default: <worker's TMPDIR>/blockwise-sweep)")
    run.add_argument("--profiles", metavar="DIR", default=None,
                     help="device profiles directory, at this path on every worker, passed to cells as BLOCKWISE_PROFILES "
                          "(default: $BLOCKWISE_PROFILES, else <repo>/profiles)")
    run.add_argument("--retries", type=int, default=1, metavar="N",
                     help="run a cell that failed with exit 1 (or a signal) up to N more times (default: 1); "
                          "exit 2 (bad configuration) and 3 (budget cannot be met) are never retried")
    run.add_argument("--retry-failed", action="store_true", help="run again the cells recorded as failed by earlier runs")
    run.add_argument("--allowed-failures", type=int, default=3, metavar="N",
                     help="LocalCluster: times a cell may lose its worker before it fails (Dask's "
                          "distributed.scheduler.allowed-failures; an external scheduler uses its own; default: 3)")
    run.add_argument("--connect-timeout", default="30s", metavar="T", help="time to wait for --scheduler (default: 30s)")
    lst = sub.add_parser("list", help="validate the spec; show each part's cells done, failed and to do",
                         description="Validate the spec (exit 2 if it is malformed) and show each part's cells: "
                                     "done (in the database or the spec's result-lines file), failed, to do.")
    add_common(lst)
    lst.add_argument("--cells", action="store_true", help="one line per cell: status, key and arguments")
    lst.add_argument("--no-check", action="store_true",
                     help="skip asking the binary to check each cell's options (`train --check-options`, a few "
                          "milliseconds per distinct cell; run always checks)")
    rep = sub.add_parser("report", help="CSV and Markdown tables and an SVG plot from the results database",
                         description="Tables (CSV per cell, Markdown: means over seeds and every cell) and an SVG plot "
                                     "(last module's test accuracy against counted peak memory, one series per --series).")
    add_common(rep)
    rep.add_argument("--out", metavar="DIR", help="output directory (default: sweep-results/<spec name>/)")
    rep.add_argument("--series", metavar="OPTION[,OPTION]",
                     help="the options whose values make the plot's series (default: procedure, if it varies)")
    exp = sub.add_parser("export", help="rewrite the spec's result-lines (export) files from the database",
                         description="Write each part's done cells as result lines into the file the spec's `export` "
                                     "names (run does it after every run).")
    add_common(exp)
    return top


def load(args):
    args.binary = os.path.abspath(args.binary or default_binary())
    options = specs.train_options(args.binary)
    spec = specs.load(args.spec, options)
    parts = spec.select(args.part)
    if not args.db:
        args.db = os.path.join(ROOT, "sweep-results", f"{spec.name}.sqlite")
    args.db = os.path.abspath(args.db)
    return spec, parts


def shown(path):
    """A path relative to the current directory when it is below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def check_profiles(parts, directory):
    """Every cell's --profile names a profile in `directory`, 'none', or a JSON file."""
    known = sorted(n[:-5] for n in os.listdir(directory) if n.endswith(".json")) if os.path.isdir(directory) else []
    for part in parts:
        for cell in part.cells:
            value = cell.options.get("profile")
            if value is None or value == "none":
                continue
            value = str(value)
            if "/" in value or value.endswith(".json"):
                if not os.path.isfile(value):
                    raise specs.SpecError(f"part {part.name}, cell {cell.key}: --profile {value}: no such file "
                                          "(a relative profile path in a spec is relative to the spec's folder)")
            elif known and value not in known:
                raise specs.SpecError(f"part {part.name}, cell {cell.key}: --profile {value} is not a profile in {directory} "
                                      f"(known: {', '.join(known)}, or 'none', or a path to a JSON file)")


def command_list(spec, parts, args):
    from .db import Results
    from .runner import sync_exports
    db = Results.snapshot(args.db)  # read-only: the file is never written, nor created
    sync_exports(db, parts, spec.flags, quiet=True)
    rows = db.rows()
    db.close()
    for part in parts:
        exported = {l["key"] for l in result_lines.read(part.export)} if part.export else set()
        counts = {"done": 0, "failed": 0, "interrupted": 0, "running": 0, "to do": 0}
        for cell in part.cells:
            row = rows.get((part.name, cell.key))
            status = row["status"] if row is not None else "to do"
            counts[status] += 1
            if args.cells:
                attempts = f" attempts {row['attempts']}" if row is not None and row["attempts"] else ""
                print(f"  {status:11s} {cell.key}{attempts}: {shlex.join(cell.arguments())}")
        extra = ", ".join(f"{n} {k}" for k, n in counts.items() if n and k not in ("done",))
        stray = exported - {c.key for c in part.cells}
        print(f"{part.name}: {counts['done']}/{len(part.cells)} cells done" + (f" ({extra})" if extra else "")
              + (f"; {len(stray)} lines in {shown(part.export)} are not cells of the part" if stray else ""))
    return 0


def command_report(spec, parts, args):
    from . import report
    from .db import Results
    if not os.path.exists(args.db) and not any(p.export and os.path.exists(p.export) for p in parts):
        print(f"sweep: no results database at {args.db}: run 'tools/sweep run {args.spec}' first (or pass --db)", file=sys.stderr)
        return 2
    db = Results.snapshot(args.db)  # read-only
    from .runner import sync_exports
    sync_exports(db, parts, spec.flags)  # the spec's result lines count as done cells (in memory)
    names, table = report.build(parts, db)
    group_names, groups = report.grouped(names, table)
    suffix = f"-{args.part}" if args.part else ""
    out = os.path.abspath(args.out or os.path.join(ROOT, "sweep-results", spec.name))
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, spec.name + suffix)
    report.write_csv(base + ".csv", names, table)
    series = args.series.split(",") if args.series else ["procedure"]
    unknown = [s for s in series if s not in group_names]
    if args.series and unknown:
        print(f"sweep: --series {','.join(unknown)}: not an option that varies in this sweep "
              f"(those that do: {', '.join(group_names) or 'none'})", file=sys.stderr)
        return 2
    title = f"{spec.name}{suffix}: last module's test accuracy against counted peak"
    svg = report.svg_plot(groups, group_names, series, title)
    image = None
    if svg:
        with open(base + ".svg", "w") as f:
            f.write(svg)
        image = os.path.basename(base + ".svg")
    runs = list(db.db.execute("SELECT * FROM runs WHERE status IS NOT NULL ORDER BY id"))
    header = []
    spec_path = os.path.relpath(spec.path, ROOT) if spec.path.startswith(ROOT) else spec.path
    out_path = os.path.relpath(out, ROOT) if out.startswith(ROOT) else out
    part_flag = f" --part {args.part}" if args.part else ""
    header.append(f"Made with `tools/sweep run {spec_path}{part_flag}` and "
                  f"`tools/sweep report {spec_path}{part_flag} --out {out_path}`"
                  + (f" (`--series {args.series}`)" if args.series else "") + ".")
    relevant = [r for r in runs if set(r["parts"].split(",")) & {p.name for p in parts}]
    if relevant:
        header.append("")
        header.append("Runs: " + "; ".join(
            f"{r['id']}: {r['started']} to {r['ended'] or '?'} on {r['scheduler']}, {r['submitted']} cells submitted, "
            f"{r['done'] if r['done'] is not None else '?'} done, {r['failed'] if r['failed'] is not None else '?'} failed"
            f" ({r['status']}), binary at commit {r['commit_id'] or '?'}"
            + (f", version {r['binary_version']}" if r["binary_version"] else "") for r in relevant) + ".")
    done = sum(1 for e in table if e["status"] == "done")
    header.append("")
    header.append(f"{done} of {len(table)} cells done. Accuracy is the test accuracy (%) of the module's head; "
                  "peak is the counted peak (ledger + SQLite engine) in MiB; device figures are the emulated "
                  "device's (blank with `--profile none`); wall s is the cell's time on its worker.")
    text = report.markdown(spec, parts, names, table, group_names, groups, header, image)
    with open(base + ".md", "w") as f:
        f.write(text)
    db.close()
    for path in [base + ".csv", base + ".md"] + ([base + ".svg"] if svg else []):
        print(f"sweep: wrote {path}")
    return 0


def main(argv=None):
    def on_signal(number, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return command(parser().parse_args(argv))
    except KeyboardInterrupt:
        print("sweep: stopped (rerun to resume)", file=sys.stderr, flush=True)
        return 130


def command(args):
    from .db import DatabaseError
    try:
        return dispatch(args)
    except specs.SpecError as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 2
    except DatabaseError as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # an unreadable result-lines file (names the file and line)
        print(f"sweep: error: {error}", file=sys.stderr)
        return 2


def dispatch(args):
    if args.command == "run" and args.scheduler is not None and not args.scheduler.strip():
        print("sweep: error: --scheduler: expected an address such as tcp://HOST:8786 (got an empty string); "
              "leave it out for a LocalCluster", file=sys.stderr)
        return 2
    spec, parts = load(args)
    total = sum(len(p.cells) for p in parts)
    if total > LARGE and args.command in ("list", "run"):
        print(f"sweep: warning: {total} cells (more than {LARGE}): is the grid meant to be this large? "
              "(use --part or fewer axis values)", file=sys.stderr, flush=True)
    if args.command in ("list", "run"):
        args.profiles = os.path.abspath(getattr(args, "profiles", None) or default_profiles())
        check_profiles(parts, args.profiles)
        if not getattr(args, "no_check", False):
            specs.check_cells(args.binary, parts, args.profiles)
    if args.command == "list":
        return command_list(spec, parts, args)
    if args.command == "report":
        return command_report(spec, parts, args)
    if args.command == "export":
        from .db import Results
        from .runner import export, sync_exports
        db = Results.snapshot(args.db)  # read-only: the database is not written
        existing = sync_exports(db, parts, spec.flags)
        export(db, parts, existing)
        return 0
    if args.scratch:
        args.scratch = os.path.abspath(args.scratch)  # the same path on every worker, whatever its cwd
    for name, value in [("--workers", args.workers), ("--max-cells", args.max_cells), ("--retries", args.retries),
                        ("--allowed-failures", args.allowed_failures)]:
        if value is not None and value < (1 if name == "--workers" else 0):
            print(f"sweep: error: {name} must be {'at least 1' if name == '--workers' else 'zero or more'} (got {value})",
                  file=sys.stderr)
            return 2
    if args.scheduler and args.workers:
        print("sweep: error: --workers sizes a LocalCluster; with --scheduler the workers are those started with "
              "`dask worker`", file=sys.stderr)
        return 2
    if not args.scheduler and not os.path.isdir(args.profiles):
        print(f"sweep: error: profiles directory {args.profiles} not found: pass --profiles DIR or set BLOCKWISE_PROFILES",
              file=sys.stderr)
        return 2
    from .runner import run, Unreachable
    try:
        return run(spec, parts, args, ROOT)
    except Unreachable as error:
        print(f"sweep: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
