"""The HTML around a report: one page with inline styles and a small inline script that sorts tables.

No external resource of any kind (fonts, scripts, images): the file opens from an e-mail attachment without a
network. Every text taken from records is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;
color:#1d232a;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccd}
h3{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em}th,td{border:1px solid #d5d9de;padding:3px 7px;text-align:left;
vertical-align:top}th{background:#eef1f4}table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.failed{color:#b00020;font-weight:600}.ok{color:#127a2f}.skipped{color:#8a6d00}.warn{color:#8a4b00}
.problem{background:#fff4e5;border-left:4px solid #e08a00;padding:4px 8px;margin:4px 0}
.error{background:#fdecee;border-left:4px solid #b00020;padding:4px 8px;margin:4px 0}
figure{display:inline-block;margin:4px 8px 8px 0;vertical-align:top}figcaption{font-size:12px;color:#555}
img{image-rendering:pixelated;background:#000}details{margin:.3em 0}code,pre{font-size:12px}
pre{background:#f6f8fa;padding:6px;overflow:auto;max-height:22em}.case{border-top:2px solid #889;margin-top:2em}
.small{font-size:12px;color:#555}.wide{overflow-x:auto;max-width:100%}
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, column){
    th.addEventListener("click", function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function(h){ h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      function key(row){ var cell = row.cells[column]; var v = cell.getAttribute("data-sort");
        if (v === null) { v = cell.textContent.trim(); } var n = parseFloat(v);
        return isNaN(n) || !/^-?[0-9.]/.test(v) ? [1, v.toLowerCase()] : [0, n]; }
      rows.sort(function(a, b){ var x = key(a), y = key(b);
        var c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0); return up ? c : -c; });
      rows.forEach(function(row){ body.appendChild(row); });
    });
  });
});
"""


def esc(value: Any) -> str:
    """``value`` as HTML text."""
    return html.escape("" if value is None else str(value), quote=True)


def number(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False,
          numeric: Sequence[int] = (), raw: Sequence[int] = (), table_id: str | None = None) -> str:
    """An HTML table; cells are escaped except the columns in ``raw`` (HTML built by the caller); ``numeric``
    columns are right-aligned and sort by their value."""
    attributes = (' class="sortable"' if sortable else "") + (f' id="{esc(table_id)}"' if table_id else "")
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            if index in raw:
                text, sort = (cell if isinstance(cell, tuple) else (cell, None))
                key = f' data-sort="{esc(sort)}"' if sort is not None else ""
                cells.append(f"<td{key}>{text}</td>")
            elif index in numeric:
                key = f' data-sort="{esc(cell)}"' if isinstance(cell, (int, float)) else ""
                cells.append(f'<td class="num"{key}>{number(cell)}</td>')
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{attributes}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(uri: str, caption: str, *, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<figure><img src="{uri}" alt="{esc(caption)}"{size}><figcaption>{esc(caption)}</figcaption></figure>'


def document(title: str, body: str) -> str:
    """The whole page."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{body}"
            f"<script>{SORT_SCRIPT}</script></body></html>\n")
