"""
The benchmark's table: every figure as median [min-max] over the repeated runs, beside the
direct-TCP baseline and websockify measured in the same run, with ratios and the target.
"""

import math

COLUMNS = ("websocket", "xvpvnc", "direct", "bare", "websockify")
TITLES = {"websocket": "consoleproxy WS", "xvpvnc": "consoleproxy xvpvnc", "direct": "direct TCP",
          "bare": "bare Python relay", "websockify": "websockify"}


def _num(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(values):
    if not values:
        return "-"
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2] if len(ordered) % 2 else (
        ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    if len(values) == 1:
        return _num(mid)
    return f"{_num(mid)} [{_num(ordered[0])}-{_num(ordered[-1])}]"


def _ratio(row, a, b):
    x, y = row.median(a), row.median(b)
    if x is None or y is None or y == 0:
        return "-"
    return f"{x / y:.2f}"


def render(header, rows, notes):
    head = ["measure", "unit", *(TITLES[c] for c in COLUMNS), "WS/direct", "WS/websockify",
            "target", "met"]
    table = [head]
    for row in rows:
        text, check = row.target
        met = check(row) if check else None
        table.append([row.measure, row.unit, *(cell(row.values.get(c)) for c in COLUMNS),
                      _ratio(row, "websocket", "direct"), _ratio(row, "websocket", "websockify"),
                      text, "" if met is None else ("yes" if met else "NO")])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = [header, ""]
    for i, r in enumerate(table):
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("Values: median [min-max] over the repeated runs; ratios of medians.")
    for row in rows:
        if row.note:
            lines.append(f"- {row.measure}: {row.note}")
    for note in notes:
        lines.append(f"- {note}")
    return "\n".join(lines)
