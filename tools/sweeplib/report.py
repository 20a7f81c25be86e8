"""`tools/sweep report`: CSV and Markdown tables and an SVG plot from the results database.

Per cell: the options that vary across the sweep, status, attempts, last and best module's test
accuracy, the counted peak (the ledger's peak plus SQLite's, as `blockwise train` reports it),
the budget and whether it held, emulated device time and energy, host and wall time.
Grouped: the same over seeds (mean, and standard deviation where n > 1).
Plot: test accuracy of the last module against counted peak memory, one series per value of
--series (default: the procedure), each point a group's mean over seeds.
"""
import csv, html, json, math, statistics

from .spec import render
from .task import headline

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
MARKERS = ["circle", "square", "triangle", "diamond"]


def mib(n):
    return None if n is None else n / 2 ** 20


def fmt(value, digits=2):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def number(value):
    """A figure of an imported line: a number, or None (a string or anything else is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def row_figures(row):
    """The figures of one database row (done rows: from the report JSON, or the imported line)."""
    out = {"status": row["status"], "attempts": row["attempts"], "exit code": row["exit_code"],
           "wall s": number(row["seconds"]), "worker": row["worker"],
           "error": headline(row["error"], row["exit_code"])[:120] if row["error"] else ""}
    if row["status"] != "done":
        return out
    try:
        line = json.loads(row["line"]) if row["line"] else {}
    except ValueError:
        line = {}
    line = line if isinstance(line, dict) else {}
    out.update({"last %": number(line.get("last")), "best %": number(line.get("best")),
                "peak MiB": mib(number(line.get("peakBytes")))})
    if row["report"]:
        r = json.loads(row["report"])
        modules = [m["evaluation"] for m in r["modules"]]
        out["last %"] = round(modules[-1]["testAccuracy"] * 100, 2)
        out["best %"] = round(max(m["testAccuracy"] for m in modules) * 100, 2)
        out["peak MiB"] = mib(r.get("peakBytes"))
        out["budget MiB"] = mib(r.get("budget"))
        out["budget held"] = r.get("budgetHeld")
        out["host peak RSS MiB"] = mib(r.get("hostPeakResidentBytes"))
        out["host s"] = r.get("hostSeconds")
        device = r.get("device") or {}
        out["device compute s"] = device.get("computeSeconds")
        out["device storage s"] = device.get("storageSeconds")
        out["device energy J"] = device.get("energyJoules")
    return out


FIGURES = ["status", "attempts", "last %", "best %", "peak MiB", "budget MiB", "budget held", "device compute s",
           "device storage s", "device energy J", "host s", "wall s", "host peak RSS MiB", "exit code", "error"]
FLOATS = {"last %", "best %", "peak MiB", "budget MiB", "device compute s", "device storage s", "device energy J",
          "host s", "wall s", "host peak RSS MiB"}
GROUPED = ["last %", "best %", "peak MiB", "device compute s", "device storage s", "device energy J", "host s", "wall s"]


def varying(cells):
    names = []
    for cell in cells:
        for name in cell.options:
            if name not in names and len({json.dumps(c.options.get(name)) for c in cells}) > 1:
                names.append(name)
    return names


def build(parts, db):
    cells = [c for p in parts for c in p.cells]
    rows = db.rows() if db else {}
    names = varying(cells)
    table = []
    for cell in cells:
        row = rows.get((cell.part, cell.key))
        figures = row_figures(row) if row is not None else {"status": "not run", "attempts": 0}
        entry = {"part": cell.part, "key": cell.key}
        entry.update({n: render(cell.options[n]) if n in cell.options else "" for n in names})
        entry.update(figures)
        table.append(entry)
    return names, table


def grouped(names, table, seed="seed"):
    by = {}
    group_names = [n for n in names if n != seed]
    for entry in table:
        by.setdefault(tuple((n, json.dumps(entry.get(n))) for n in ["part"] + group_names), []).append(entry)
    out = []
    for key, entries in by.items():
        done = [e for e in entries if e["status"] == "done"]
        g = {"part": entries[0]["part"]}
        g.update({n: entries[0].get(n) for n in group_names})
        g["done"] = f"{len(done)}/{len(entries)}"
        for column in GROUPED:
            values = [e[column] for e in done if e.get(column) is not None]
            g[column] = statistics.mean(values) if values else None
            g[column + " sd"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(g)
    return group_names, out


def write_csv(path, names, table):
    columns = ["part", "key"] + names + FIGURES + ["worker"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for entry in table:
            writer.writerow(["" if entry.get(c) is None else entry.get(c) for c in columns])


def markdown(spec, parts, names, table, group_names, groups, header_lines, image):
    out = [f"# Sweep {spec.name}" + (f" — {', '.join(p.name for p in parts)}" if len(spec.parts) > 1 else ""), ""]
    if spec.description:
        out += [spec.description.strip(), ""]
    out += header_lines + [""]
    if image:
        out += [f"![last module's test accuracy against counted peak memory]({image})", ""]
    show_part = len(parts) > 1
    figures = [c for c in GROUPED if any(g.get(c) is not None for g in groups)]
    out += ["## Mean over seeds" if "seed" in names else "## Groups", ""]
    columns = (["part"] if show_part else []) + group_names + ["done"] + figures
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "---|" * len(columns))
    for g in groups:
        cells = []
        for c in columns:
            if c in figures:
                v, sd = g.get(c), g.get(c + " sd")
                digits = 1 if c.endswith("s") or c.endswith("J") else 2
                cells.append("" if v is None else fmt(float(v), digits) + (f" ± {sd:.{digits}f}" if sd else ""))
            else:
                cells.append(md(g.get(c)))
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Cells", ""]
    shown = [c for c in FIGURES if c not in ("host peak RSS MiB",) and any(e.get(c) not in (None, "") for e in table)]
    columns = (["part"] if show_part else []) + names + shown
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "---|" * len(columns))
    for e in table:
        out.append("| " + " | ".join(md(float(e[c]) if c in FLOATS and e.get(c) is not None else e.get(c),
                                        1 if c.endswith(" s") or c.endswith("J") else 2) for c in columns) + " |")
    return "\n".join(out) + "\n"


def md(value, digits=2):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt(value, digits)
    return str(value).replace("|", "\\|")


def svg_plot(groups, group_names, series_names, title):
    points = [g for g in groups if g.get("peak MiB") and g.get("last %") is not None]
    if not points:
        return None
    series_names = [s for s in series_names if s in group_names] or group_names[:1]
    label_names = [n for n in group_names if n not in series_names]
    series = {}
    for g in points:
        series.setdefault(" ".join(str(g.get(s)) for s in series_names) or "all", []).append(g)
    xs = [g["peak MiB"] for g in points]
    ys = [g["last %"] for g in points]
    logx = max(xs) / min(xs) > 10
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    x0, x1 = fx(min(xs)), fx(max(xs))
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - (0.5 if logx else max(0.5, x0 * 0.1)), x1 + (0.5 if logx else max(0.5, x1 * 0.1))
    pad = (x1 - x0) * 0.06
    x0, x1 = x0 - pad, x1 + pad * (4 if label_names else 1)  # room for the points' labels
    y0, y1 = math.floor(min(ys) / 5) * 5, math.ceil(max(ys) / 5) * 5
    if y1 - y0 < 5:
        y1 = y0 + 5
    w, h, left, right, top, bottom = 820, 460, 70, 250, 44, 56
    X = lambda v: left + (w - left - right) * (fx(v) - x0) / (x1 - x0)
    Y = lambda v: top + (h - top - bottom) * (y1 - v) / (y1 - y0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    step = 5 if y1 - y0 > 20 else (2 if y1 - y0 > 8 else 1)
    for v in range(int(y0), int(y1) + 1, step):
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 8}" y="{Y(v) + 4:.1f}" text-anchor="end">{v}%</text>')
    ticks = []
    if logx:
        for e in range(math.floor(x0), math.ceil(x1) + 1):
            for m in (1, 2, 5):
                v = m * 10 ** e
                if x0 <= math.log10(v) <= x1:
                    ticks.append(v)
    else:
        span = (x1 - x0) / 6
        magnitude = 10 ** math.floor(math.log10(span))
        step_x = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= span), default=span)
        v = math.ceil(x0 / step_x) * step_x
        while v <= x1:
            ticks.append(v)
            v += step_x
    for v in ticks:
        out.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{top}" y2="{h - bottom}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{X(v):.1f}" y="{h - bottom + 18}" text-anchor="middle">{v:g}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 14}" text-anchor="middle">counted peak memory (MiB{", log scale" if logx else ""})</text>')
    out.append(f'<text x="18" y="{(top + h - bottom) / 2}" text-anchor="middle" transform="rotate(-90 18 {(top + h - bottom) / 2})">last module test accuracy (%)</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" stroke="#444"/>')
    labels = {}  # points at the same place (e.g. two devices with the same figures) share one stacked label
    for i, (name, members) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        members = sorted(members, key=lambda g: g["peak MiB"])
        for g in members:
            cx, cy = X(g["peak MiB"]), Y(g["last %"])
            tip = html.escape(", ".join(f"{n}={g.get(n)}" for n in group_names) + f": {g['last %']:.2f}% at {g['peak MiB']:.2f} MiB")
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}" fill-opacity="0.85"><title>{tip}</title></circle>')
            if label_names:
                place = (round(cx / 4), round(cy / 4))
                labels.setdefault(place, (cx, cy, []))[2].append(" ".join(str(g.get(n)) for n in label_names))
        ly = top + 10 + 20 * i
        out.append(f'<circle cx="{w - right + 24}" cy="{ly}" r="5" fill="{color}"/>')
        out.append(f'<text x="{w - right + 36}" y="{ly + 4}">{html.escape(name)}</text>')
    for cx, cy, texts in labels.values():
        for k, text in enumerate(texts):
            out.append(f'<text x="{cx + 7:.1f}" y="{cy - 6 - 11 * (len(texts) - 1 - k):.1f}" font-size="10" fill="#333">{html.escape(text)}</text>')
    missing = [g for g in groups if g.get("peak MiB") is None or g.get("last %") is None]
    if missing:
        ly = top + 10 + 20 * len(series) + (40 if label_names else 10)
        out.append(f'<text x="{w - right + 16}" y="{ly}" font-size="10" fill="#333">not plotted ({len(missing)}, no cell done):</text>')
        for k, g in enumerate(missing[:12]):
            text = " ".join(str(g.get(n)) for n in group_names)
            out.append(f'<text x="{w - right + 16}" y="{ly + 13 * (k + 1)}" font-size="10" fill="#777">{html.escape(text)}</text>')
        if len(missing) > 12:
            out.append(f'<text x="{w - right + 16}" y="{ly + 13 * 13}" font-size="10" fill="#777">and {len(missing) - 12} more</text>')
    if label_names:
        ly = top + 10 + 20 * len(series) + 10
        out.append(f'<text x="{w - right + 16}" y="{ly}" font-size="10" fill="#333">labels: {html.escape(" ".join(label_names))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
