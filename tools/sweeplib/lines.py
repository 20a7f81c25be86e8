"""Result lines: one JSON object per done cell, the format of docs/results/*.jsonl.

    {"key", "command" (blockwise train + the cell's options), "accuracy" (test accuracy % per
     module), "kinetic" (kinetic energy per module), "last", "best" (%), "peakBytes" (counted peak),
     "seconds" (wall time of the cell), "commit"}

A spec's `export` file holds them: its lines count as done cells (imported into the database),
and after a run the database's done cells are written back, existing lines first in their order,
then new cells in the spec's order. Lines that are not cells of the spec are kept as they are.
"""
import json, os, tempfile


def result_line(cell, report_text, seconds, commit):
    r = json.loads(report_text)
    modules = [m["evaluation"] for m in r["modules"]]
    return {
        "key": cell.key,
        "command": "blockwise train " + " ".join(cell_arguments_for_line(cell)),
        "accuracy": [round(m["testAccuracy"] * 100, 2) for m in modules],
        "kinetic": [m["kineticEnergy"] for m in modules],
        "last": round(modules[-1]["testAccuracy"] * 100, 2),
        "best": round(max(m["testAccuracy"] for m in modules) * 100, 2),
        "peakBytes": r["peakBytes"],
        "seconds": round(seconds, 1),
        "commit": commit,
    }


def cell_arguments_for_line(cell):
    arguments = cell.arguments()
    if "--threads" not in arguments:
        arguments += ["--threads", "1"]
    return arguments


def read(path):
    """The lines of an export file, in order ([] if it does not exist)."""
    if not path or not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for number, text in enumerate(f, 1):
            if text.strip():
                try:
                    line = json.loads(text)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not a JSON line: {error}")
                if "key" not in line:
                    raise ValueError(f"{path}:{number}: a result line needs a 'key'")
                out.append(line)
    return out


def write(path, existing, done_lines, order):
    """Rewrites `path` atomically: existing lines (updated from the database), then new ones."""
    seen, out = set(), []
    for line in existing:
        out.append(done_lines.get(line["key"], line))
        seen.add(line["key"])
    for key in order:
        if key in done_lines and key not in seen:
            out.append(done_lines[key])
            seen.add(key)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    text = "".join(json.dumps(line) + "\n" for line in out)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return len(out), False
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".export-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(temporary, path)
    return len(out), True
