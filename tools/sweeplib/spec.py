"""Sweep specs: a TOML file naming a grid of `blockwise train` runs (stdlib only).

A spec is validated in full before anything runs; every error names the key (as a TOML path,
e.g. `parts.small.axes.width[2]`) and what was expected, and raises SpecError (exit 2).

    name = "devices"                  # required: names the results database
    description = "..."               # optional
    key = "{profile}|{width}|{seed}"  # optional: the cell key, from the cell's option values
    export = "results/{part}.jsonl"   # optional: result lines file (relative to the spec's folder)

    [base]                            # blockwise train options of every cell (names without --)
    modules = 4
    in-memory = true                  # a flag: true passes it, false leaves it out

    [axes]                            # the cross product of these, in this order
    profile = ["rpi-zero-2w", "phone-3gb"]
    width = [8, 16]
    method = [{procedure = "sequential", tau = "off"}, {procedure = "e2e", tau = "off"}]

    [[cells]]                         # explicit cells (base + these options), after the grid
    procedure = "parallel"

    [parts.NAME]                      # optional: parts with their own description, key, export,
    base = {...}                      # base (merged over the top-level base), axes and cells

An axis named after a `train` option lists values of that option; an axis with any other name
lists tables of options (a "bundle": options that vary together). Option values are strings,
integers or floats (written as they are given: use strings, e.g. "1e-4", to fix the text).

Paths: `export`, and the path values of `data` and `profile` (a profile value with a '/' or
ending in .json), are relative to the spec file's folder when they are not absolute (cells run
in scratch directories, so they are made absolute here). Two parts may not write one export file.
Values are checked again by the binary (`blockwise train ... --check-options`) before a run.
"""
import difflib, itertools, os, re, shlex, signal, subprocess, tomllib

# Options the sweep itself sets for every cell (a spec may not).
RESERVED = {"json": "each cell writes its report JSON into its scratch directory",
            "store": "each cell's store lives in its scratch directory (--keep-stores keeps it)",
            "report": "each cell's report files live in its scratch directory",
            "help": "not a training option"}
TOP_KEYS = {"name": "a string", "description": "a string", "key": "a key template string",
            "export": "a path string", "base": "a table of train options", "axes": "a table of axes",
            "cells": "an array of tables of train options", "parts": "a table of parts"}
PART_KEYS = {k: v for k, v in TOP_KEYS.items() if k not in ("name", "parts")}
DEFAULT_PART = "main"
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class SpecError(Exception):
    """A malformed spec (or a spec the binary cannot take): exit 2 before anything runs."""


class Option:
    def __init__(self, name, flag, values=None):
        self.name, self.flag, self.values = name, flag, values


def train_options(binary):
    """The options of `blockwise train`, parsed from `BINARY train --help` (so the spec always
    matches the binary it runs): {name: Option}."""
    if not os.path.exists(binary):
        raise SpecError(f"blockwise binary not found at {binary}: build it (swift build -c release), "
                        "or pass --binary PATH / set BLOCKWISE_BINARY")
    code, text = run_binary([binary, "train", "--help"])
    return parse_help(text, binary)


HELP_TIMEOUT = float(os.environ.get("BLOCKWISE_SWEEP_BINARY_TIMEOUT") or 30)


def run_binary(argv, env=None, timeout=None):
    """(exit code, stdout + stderr) of a quick question to the binary; a binary that does not answer
    within the timeout is killed (its whole process group) and refused."""
    timeout = HELP_TIMEOUT if timeout is None else timeout
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env, start_new_session=True)
    except OSError as error:
        raise SpecError(f"cannot run {shlex.join(argv[:2])}: {error}")
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            process.kill()
        process.wait()
        raise SpecError(f"'{shlex.join(argv[:2] + argv[2:3])}' did not answer within {timeout:g} s (killed): is "
                        f"{argv[0]} the blockwise binary? (BLOCKWISE_SWEEP_BINARY_TIMEOUT sets the wait)")
    except BaseException:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        raise
    return process.returncode, out


def binary_version(binary):
    try:
        code, text = run_binary([binary, "--version"])
    except SpecError:
        return None
    return text.strip().splitlines()[0] if code == 0 and text.strip() else None


def first_error(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return next((l for l in lines if l.startswith(("error:", "Error:"))), lines[-1] if lines else "(no message)")


def check_cells(binary, parts, profiles, threads=None):
    """Every distinct argument set of the cells through `BINARY train ARGS --check-options` (no
    data read, nothing trained); SpecError naming the first cell refused and the binary's error."""
    from concurrent.futures import ThreadPoolExecutor
    env = dict(os.environ)
    if profiles:
        env["BLOCKWISE_PROFILES"] = profiles
    first = {}
    for part in parts:
        for cell in part.cells:
            first.setdefault(tuple(cell.arguments()), (part.name, cell.key))
    def one(arguments):
        return run_binary([binary, "train"] + list(arguments) + ["--check-options"], env=env)
    with ThreadPoolExecutor(max_workers=threads or min(8, (os.cpu_count() or 1) * 2)) as pool:
        answers = list(pool.map(one, list(first)))
    for arguments, (code, text) in zip(first, answers):
        if code != 0:
            part, key = first[arguments]
            raise SpecError(f"part {part}, cell {key}: the binary refuses its options (exit {code}): {first_error(text)}")
    return len(first)


def parse_help(text, binary="blockwise"):
    options, current, blocks = {}, None, {}
    for line in text.splitlines():
        m = re.match(r"^  (?:-\w, )?--([a-z0-9][a-z0-9-]*)(?: <([^>]*)>)?(.*)$", line)
        if m:
            current = m.group(1)
            options[current] = Option(current, flag=m.group(2) is None)
            blocks[current] = m.group(3)
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        elif not line.strip():
            current = None
    for name, block in blocks.items():
        m = re.search(r"\(values: ([^;)]*)", " ".join(block.split()))
        if m:
            options[name].values = [v.strip() for v in m.group(1).split(",")]
    if "tau" not in options or "procedure" not in options:
        raise SpecError(f"'{binary} train --help' does not list the train options (is it the blockwise binary?)")
    return options


def type_name(value):
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def render(value):
    """An option value as it goes on the command line."""
    return repr(value) if isinstance(value, float) else str(value)


def check_option(path, name, value, options):
    """One option of a cell: a known train option of the right type."""
    if name in RESERVED:
        raise SpecError(f"{path}: '{name}' cannot be set in a spec: {RESERVED[name]}")
    if name not in options:
        close = difflib.get_close_matches(name, list(options), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"{path}: unknown blockwise train option '{name}'{hint}; "
                        f"known: {', '.join(sorted(o for o in options if o not in RESERVED))}")
    option = options[name]
    if option.flag:
        if not isinstance(value, bool):
            raise SpecError(f"{path}: --{name} is a flag: expected true or false, got {type_name(value)} ({value!r})")
        return
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(f"{path}: --{name} takes a value: expected a string, integer or float, "
                        f"got {type_name(value)} ({value!r})")
    if isinstance(value, str) and not value.strip():
        raise SpecError(f"{path}: --{name}: expected a value, got an empty string")
    if option.values and render(value) not in option.values:
        raise SpecError(f"{path}: --{name} must be one of {', '.join(option.values)} (got {value!r})")


def check_options(path, table, options):
    if not isinstance(table, dict):
        raise SpecError(f"{path}: expected a table of blockwise train options, got {type_name(table)}")
    for name, value in table.items():
        check_option(f"{path}.{name}", name, value, options)


def is_path_value(name, value):
    if not isinstance(value, str):
        return False
    return name == "data" or (name == "profile" and ("/" in value or value.endswith(".json")))


def absolute_paths(table, folder):
    """The table with its relative path values made relative to `folder` (the spec's)."""
    out = {}
    for name, value in table.items():
        if is_path_value(name, value) and not os.path.isabs(os.path.expanduser(value)):
            value = os.path.normpath(os.path.join(folder, value))
        elif is_path_value(name, value):
            value = os.path.expanduser(value)
        out[name] = value
    return out


class Cell:
    def __init__(self, part, key, options, varying):
        self.part, self.key = part, key
        self.options = options      # {name: value}, in command-line order
        self.varying = varying      # the names set by axes or by an explicit cell (not the base)

    def arguments(self):
        """The train arguments of the cell (without the sweep's --json/--store/--threads)."""
        out = []
        for name, value in self.options.items():
            if isinstance(value, bool):
                if value:
                    out.append(f"--{name}")
            else:
                out += [f"--{name}", render(value)]
        return out


class Part:
    def __init__(self, name, description, key, export, cells):
        self.name, self.description, self.key, self.export, self.cells = name, description, key, export, cells


class Spec:
    def __init__(self, path, name, description, parts, flags=()):
        self.path, self.name, self.description, self.parts = path, name, description, parts
        self.flags = set(flags)  # the train options that take no value

    def select(self, part=None):
        if part is None:
            return list(self.parts.values())
        if part not in self.parts:
            raise SpecError(f"--part {part}: the spec {self.path} has no part '{part}'; "
                            f"its parts: {', '.join(self.parts)}")
        return [self.parts[part]]


def expect(path, value, kind):
    if not isinstance(value, kind):
        raise SpecError(f"{path}: expected {'a string' if kind is str else 'a table'}, got {type_name(value)}")
    return value


def merge(*tables):
    """Later tables override earlier ones; an overridden option keeps its first position."""
    out = {}
    for table in tables:
        out.update(table)
    return out


def expand(prefix, part_name, base, axes, cells, key_template, options, folder):
    """Every cell of a part: the cross product of the axes over the base, then the explicit cells."""
    axis_values = []
    sets = {}
    for axis, values in axes.items():
        path = f"{prefix}axes.{axis}"
        if not isinstance(values, list):
            raise SpecError(f"{path}: an axis is an array of values, got {type_name(values)}")
        if not values:
            raise SpecError(f"{path}: an axis needs at least one value (got an empty array)")
        entries = []
        for i, value in enumerate(values):
            vpath = f"{path}[{i}]"
            if axis in options or axis in RESERVED:
                if isinstance(value, dict):
                    raise SpecError(f"{vpath}: the axis is the option --{axis}: expected a value, got a table")
                check_option(vpath, axis, value, options)
                entries.append({axis: value})
            else:
                if not isinstance(value, dict):
                    close = difflib.get_close_matches(axis, list(options), n=1)
                    hint = f" (did you mean the option '{close[0]}'?)" if close else ""
                    raise SpecError(f"{vpath}: '{axis}' is not a blockwise train option{hint}, so this axis must "
                                    f"list tables of options (e.g. {{procedure = \"e2e\", tau = \"off\"}}); "
                                    f"got {type_name(value)} ({value!r})")
                if not value:
                    raise SpecError(f"{vpath}: expected a table of at least one option, got an empty table")
                check_options(vpath, value, options)
                entries.append(value)
        for entry in entries:
            for name in entry:
                if sets.get(name, axis) != axis:
                    raise SpecError(f"{path}: sets '{name}', which the axis '{sets[name]}' also sets; "
                                    "an option may vary along one axis only")
                sets[name] = axis
        axis_values.append(entries)
    out = []
    if axes:
        for combination in itertools.product(*axis_values):
            varying = merge(*combination)
            out.append((merge(base, varying), list(varying)))
    if not isinstance(cells, list):
        raise SpecError(f"{prefix}cells: expected an array of tables ([[cells]]), got {type_name(cells)}")
    for i, cell in enumerate(cells):
        check_options(f"{prefix}cells[{i}]", cell, options)
        out.append((merge(base, cell), list(cell)))
    if not out:
        raise SpecError(f"{prefix.rstrip('.') or 'the spec'}: no cells: give axes or cells")
    result, seen = [], {}
    for number, (cell_options, varying) in enumerate(out):
        key = cell_key(prefix, key_template, cell_options, varying)
        if key in seen:
            raise SpecError(f"{prefix}key: cells {seen[key] + 1} and {number + 1} of part '{part_name}' have the same "
                            f"key '{key}': add the option that tells them apart to the key template")
        seen[key] = number
        # the key keeps the values as written; the command gets path values made absolute
        result.append(Cell(part_name, key, absolute_paths(cell_options, folder), varying))
    return result


def cell_key(prefix, template, cell_options, varying):
    if template is None:
        # The default key: option=value for what the axes and the explicit cell set.
        return "|".join(f"{n}={render(cell_options[n])}" for n in varying) or "base"
    def substitute(match):
        name = match.group(1)
        if name not in cell_options:
            raise SpecError(f"{prefix}key: the template names '{{{name}}}', but a cell does not set --{name} "
                            f"(set it in base, an axis or every explicit cell)")
        return render(cell_options[name])
    return PLACEHOLDER.sub(substitute, template)


def load(path, options):
    """Reads and validates a spec; `options` is train_options(binary)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(f"spec not found: {path}")
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}")
    for key in data:
        if key not in TOP_KEYS:
            raise SpecError(f"{path}: unknown top-level key '{key}' (expected: "
                            + ", ".join(f"{k} ({v})" for k, v in TOP_KEYS.items()) + ")")
    if "name" not in data:
        raise SpecError(f"{path}: name: missing (a string naming the sweep and its results database)")
    name = expect("name", data["name"], str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SpecError(f"name: expected letters, digits, '.', '_' or '-' (it names files), got {name!r}")
    description = expect("description", data.get("description", ""), str)
    top_key = expect("key", data["key"], str) if "key" in data else None
    top_export = expect("export", data["export"], str) if "export" in data else None
    base = data.get("base", {})
    check_options("base", base, options)
    folder = os.path.dirname(os.path.abspath(path))
    parts = {}
    if "parts" in data:
        for key in ("axes", "cells"):
            if key in data:
                raise SpecError(f"{key}: a spec with [parts] gives {key} in each part (parts.NAME.{key}), not at the top level")
        table = expect("parts", data["parts"], dict)
        if not table:
            raise SpecError("parts: expected at least one part")
        sources = table.items()
    else:
        sources = [(DEFAULT_PART, {k: data[k] for k in ("axes", "cells") if k in data})]
    for part_name, part in sources:
        prefix = f"parts.{part_name}." if "parts" in data else ""
        if not isinstance(part, dict):
            raise SpecError(f"parts.{part_name}: expected a table, got {type_name(part)}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", part_name):
            raise SpecError(f"parts.{part_name}: a part name is letters, digits, '.', '_' or '-'")
        for key in part:
            if key not in PART_KEYS:
                raise SpecError(f"{prefix}{key}: unknown key in a part (expected: "
                                + ", ".join(f"{k} ({v})" for k, v in PART_KEYS.items()) + ")")
        part_base = part.get("base", {})
        check_options(f"{prefix}base", part_base, options)
        axes = part.get("axes", {})
        if not isinstance(axes, dict):
            raise SpecError(f"{prefix}axes: expected a table of axes, got {type_name(axes)}")
        key = expect(f"{prefix}key", part["key"], str) if "key" in part else top_key
        export = expect(f"{prefix}export", part["export"], str) if "export" in part else top_export
        if export is not None:
            export = os.path.normpath(os.path.join(folder, export.replace("{part}", part_name)))
        cells = expand(prefix, part_name, merge(base, part_base), axes, part.get("cells", []), key, options, folder)
        parts[part_name] = Part(part_name, expect(f"{prefix}description", part.get("description", ""), str),
                                key, export, cells)
    writers = {}
    for part in parts.values():
        if part.export is None:
            continue
        real = os.path.realpath(part.export)
        if real in writers:
            raise SpecError(f"parts.{part.name}.export: parts '{writers[real]}' and '{part.name}' both write "
                            f"{part.export}: each part needs its own export file (e.g. export = \"results/{{part}}.jsonl\"), "
                            "or their lines would count as each other's done cells")
        writers[real] = part.name
    return Spec(os.path.abspath(path), name, description, parts, {n for n, o in options.items() if o.flag})
