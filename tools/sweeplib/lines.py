"""Result lines: one JSON object per done cell, the format of docs/results/*.jsonl.

    {"key", "command" (blockwise train + the cell's options), "accuracy" (test accuracy % per
     module), "kinetic" (kinetic energy per module), "last", "best" (%), "peakBytes" (counted peak),
     "seconds" (wall time of the cell), "commit"; with --eval-each-epoch also "authors": the last
     module's best epoch's test accuracy (%), the authors' protocol, selected on test data}

A spec's `export` file holds them: its lines count as done cells (imported into the database),
and after a run the database's done cells are written back, existing lines first in their order,
then new cells in the spec's order. Lines that are not cells of the spec are kept as they are.
"""
import json, os, shlex, tempfile

# Options a result line's command may give or leave out without making it another cell's:
# they change how the run is done or reported, not what it computes.
IGNORED = {"threads", "quiet", "json", "store", "report"}


def result_line(cell, report_text, seconds, commit):
    r = json.loads(report_text)
    modules = [m["evaluation"] for m in r["modules"]]
    last = modules[-1]
    # The authors' protocol: the best epoch of the last module (its last lap), on the test split.
    epochs = [e["testAccuracy"] for e in r.get("epochs", []) if e.get("module") == last["module"]
              and e.get("lap") == last["lap"] and e.get("testAccuracy") is not None]
    line = {
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
    if epochs:
        line["authors"] = round(max(epochs) * 100, 2)
    return line


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
                if not isinstance(line, dict) or not isinstance(line.get("key"), str):
                    raise ValueError(f"{path}:{number}: a result line is a JSON object with a string 'key'")
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


def normalised(arguments, flags):
    """{option: value (True for a flag)} of train arguments, without the IGNORED options; `flags`
    is the set of option names that take no value."""
    out, i = {}, 0
    while i < len(arguments):
        word = arguments[i]
        if not word.startswith("--"):
            out.setdefault("?", []).append(word)
            i += 1
            continue
        name, _, inline = word[2:].partition("=")
        if inline or "=" in word:
            value = inline
        elif name in flags:
            value = True
        else:
            value = arguments[i + 1] if i + 1 < len(arguments) else None
            i += 1
        i += 1
        if name not in IGNORED:
            out[name] = value
    return out


def same_value(a, b):
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def command_differs(line, cell, flags):
    """None if the line's command is the cell's (ignoring IGNORED options and the order), else a
    short description of the difference."""
    command = line.get("command")
    if not isinstance(command, str):
        return "the line has no command"
    try:
        words = shlex.split(command)
    except ValueError as error:
        return f"its command cannot be read ({error})"
    if len(words) < 2 or os.path.basename(words[0]) != "blockwise" or words[1] != "train":
        return "its command is not 'blockwise train ...'"
    theirs, ours = normalised(words[2:], flags), normalised(cell.arguments(), flags)
    differences = []
    for name in list(ours) + [n for n in theirs if n not in ours]:
        if not same_value(theirs.get(name), ours.get(name)):
            differences.append(f"--{name} {theirs.get(name, '(none)')} in the line, "
                               f"{ours.get(name, '(none)')} in the spec")
    return "; ".join(differences) or None
