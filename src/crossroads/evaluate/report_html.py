"""``report.html``: the report as one self-contained page (plots embedded as data URLs, no external asset)."""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path
from typing import Any

from crossroads.evaluate.report import BREAKDOWNS, PERCENTILES

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}
.headline{font-size:1.05em;background:#f4f7fb;padding:.8em 1em;border-radius:6px}
.note{color:#777;font-size:.85em}img{max-width:100%}
"""


def render_html(report: dict[str, Any], images: dict[str, Path]) -> str:
    """The page for ``report`` with the PNGs of ``images`` embedded."""
    window = report["window"]
    parts = [f"<h1>crossroads report{_text(' — route ' + window['route']) if window['route'] else ''}</h1>",
             f"<p class=note>{window['decisions']:,} decisions from {_when(window['first_s'])} to "
             f"{_when(window['last_s'])}; intervals are 95% bootstrap intervals over "
             f"{report['replicates']} replicates.</p>",
             f"<div class=headline>{_headline(report)}</div>"]
    for name in ("traffic_png", "spend_png", "quality_png"):
        if name in images:
            data = base64.b64encode(images[name].read_bytes()).decode("ascii")
            parts.append(f'<p><img alt="{name}" src="data:image/png;base64,{data}"></p>')
    parts.append("<h2>Savings against single models</h2>" + _savings_table(report))
    parts.append("<h2>Quality</h2>" + _quality_table(report))
    if "candidates" in report:
        parts.append("<h2>Candidate routers (off-policy)</h2>" + _candidates_section(report["candidates"]))
    for by in BREAKDOWNS:
        parts.append(f"<h2>Per {by}</h2>" + _breakdown_table(report["breakdown"][by]))
    parts.append("<h2>Prices</h2>" + _table(["model", "US$/Mtok in", "US$/Mtok out"],
                                            [[m, f"{p['price_per_mtok_in']:g}", f"{p['price_per_mtok_out']:g}"]
                                             for m, p in report["pool"].items()]))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>crossroads report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def _headline(report: dict[str, Any]) -> str:
    savings, served = report["savings"], report["quality"]["served"]
    lines = [f"Routing spent <b>US${savings['served_usd']:.4g}</b> on {savings['decisions']:,} answered requests."]
    dearest = savings["dearest"]
    if dearest is not None:
        entry = savings["models"][dearest]
        lines.append(f"Always sending them to {_text(dearest)} would have cost {_estimate(entry['spend_usd'], '$')}: "
                     f"routing saved <b>{_estimate(entry['savings'], '%')}</b>.")
    lines.append(f"Mean quality served: <b>{_estimate(served)}</b>"
                 + (f" over {served['n']:,} labelled decisions." if served["value"] is not None
                    else f" ({_text(served['note'])})."))
    shadow_calls = (report.get("shadow_calls") or {}).get("total", 0)
    if shadow_calls:
        per_model = ", ".join(f"{_text(m)} US${usd:.4g}" for m, usd in report["shadow_spend_usd"]["models"].items())
        lines.append(f"Shadow calls (other models answering in the background, never returned): {shadow_calls:,}, "
                     f"costing <b>US${report['shadow_spend_usd']['total']:.4g}</b> ({per_model}).")
    return "<br>".join(lines)


def _savings_table(report: dict[str, Any]) -> str:
    rows = [[model, _estimate(entry["spend_usd"], "$"), _estimate(entry["savings"], "%"),
             f"{entry['answers_seen']:,}", entry["spend_usd"]["note"]]
            for model, entry in report["savings"]["models"].items()]
    return _table(["always this model", "spend (US$)", "routing saved", "its answers seen", "note"], rows)


def _quality_table(report: dict[str, Any]) -> str:
    served = report["quality"]["served"]
    rows = [["served (routed)", _estimate(served), "", "", str(served["n"]), served["note"]]]
    for model, estimates in report["quality"]["single_models"].items():
        rows.append([f"always {model}", _estimate(estimates["dr"]), _estimate(estimates["ips"]),
                     _estimate(estimates["snips"]), str(estimates["dr"]["n"]), estimates["dr"]["note"]])
    return _table(["policy", "doubly robust", "IPS", "SNIPS", "labelled decisions", "note"], rows)


def _candidates_section(candidates: dict[str, Any]) -> str:
    if candidates["note"]:
        return f"<p class=note>No estimate: {_text(candidates['note'])}</p>"
    first = next(iter(candidates["routers"].values()))
    intro = (f"<p class=note>How each router file would have done, deciding as a route with objective "
             f"{_text(first['objective'])} and rule {_text(first['rule'])}, on the {candidates['decisions']:,} "
             f"answered decisions stored with their prompt ({candidates['without_prompt']:,} without one), against "
             f"what the logged policy did there; quality from {_text(candidates['quality_from'])} labels.</p>")
    rows = []
    for name, entry in candidates["routers"].items():
        for metric in ("reward", "quality", "cost_usd"):
            by = entry["candidate"][metric]
            rows.append([name, metric, _estimate(by["dr"]), _estimate(by["ips"]), _estimate(by["snips"]),
                         _estimate(entry["logged"][metric]), f"{by['dr']['n']:,}", f"{entry['matching'][metric]:,}",
                         by["dr"]["note"] if by["dr"]["value"] is None else ""])
    return intro + _table(["candidate", "metric", "doubly robust", "IPS", "SNIPS", "logged policy (observed)",
                           "decisions", "chose as the candidate", "note"], rows)


def _breakdown_table(rows: list[dict[str, Any]]) -> str:
    head = ["name", "requests", "share", "errors", "fallbacks", "spend (US$)", "tokens in", "tokens out",
            *(f"latency p{p} (s)" for p in PERCENTILES)]
    body = [[row["name"], f"{row['requests']:,}", f"{100 * row['share']:.1f}%", f"{row['errors']:,}",
             f"{row['fallbacks']:,}", f"{row['spend_usd']:.4g}", f"{row['tokens_in']:,}", f"{row['tokens_out']:,}",
             *(_number(row[f"latency_p{p}_s"]) for p in PERCENTILES)] for row in rows]
    return _table(head, body)


def _table(head: list[str], rows: list[list[str]]) -> str:
    header = "".join(f"<th>{_text(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _estimate(estimate: dict[str, Any], unit: str = "") -> str:
    if estimate["value"] is None:
        return "no estimate"

    def shown(value: float) -> str:
        return f"{100 * value:.1f}%" if unit == "%" else f"{value:.4g}"

    interval = "" if estimate["low"] is None else f" [{shown(estimate['low'])}, {shown(estimate['high'])}]"
    return shown(estimate["value"]) + interval


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _text(value: Any) -> str:
    return html.escape(str(value))
