"""Override analytics: what clinicians did with the cards, per card topic and per rule, for a clinical safety officer
tuning alert fatigue. One computation (``compute``), two views: ``report_text`` (``knee-cds report``) and
``render_html`` (GET /analytics, ops.py).

Feedback is joined to the card log by card uuid here, at report time, rather than flagged when it is stored: the card
log is written off the request path, so a card's row may land after feedback on it; joined now, it counts as soon
as it is there. Over every row stored (retention keeps KNEE_CDS_RETENTION_DAYS):

* shown: cards in the card log (a card counts for each rule that made it, e.g. D-01 and RF-01);
* accepted, overridden: cards with at least one feedback item of that outcome (a card with both counts under each);
* override reasons: per reason code (with the display the EHR sent back), cards overridden with it, "none given" for
  overrides without a reason;
* suggestion acceptance: cards with suggestions whose accepted feedback named one of them, out of the cards shown
  with suggestions;
* unknown-card feedback: items naming a card uuid the card log does not hold (never issued by this service, issued
  before the card log existed or past its retention, or its row was dropped).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import case, distinct, func, make_url, select

from .errors import ConfigurationError
from .store import FeedbackStore, card_log_table, feedback_table

NO_REASON = "none given"


@dataclass
class Tally:
    shown: int = 0
    with_suggestions: int = 0
    accepted: int = 0
    overridden: int = 0
    suggestion_accepted: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # override reason code (or NO_REASON) -> cards
    displays: dict[str, str] = field(default_factory=dict)  # override reason code -> its display

    def suggestion_acceptance(self) -> str:
        if not self.with_suggestions:
            return "no suggestions"
        share = round(100 * self.suggestion_accepted / self.with_suggestions)
        return f"{self.suggestion_accepted} of {self.with_suggestions} ({share}%)"

    def reason_lines(self) -> list[tuple[str, str, int]]:
        """(code, display, cards) of each override reason, the most frequent first."""
        ordered = sorted(self.reasons.items(), key=lambda item: (-item[1], item[0]))
        return [(code, self.displays.get(code, ""), cards) for code, cards in ordered]


@dataclass(frozen=True)
class Report:
    as_of: datetime
    topics: dict[str, Tally]
    rules: dict[str, Tally]
    unknown_items: int  # feedback items naming a card the card log does not hold
    unknown_cards: int  # ... and how many distinct card uuids they name


def compute(store: FeedbackStore, as_of: datetime, report_faults: bool = True) -> Report:
    """The numbers, from the store's card log and feedback (a ServiceUnavailable when the database is down; logged
    unless ``report_faults`` is false: the CLI says it in its one line)."""
    c, f = card_log_table.c, feedback_table.c
    joined = feedback_table.join(card_log_table, c.card_uuid == f.card_uuid)
    # Grouped by the card's whole rule list (few distinct lists: one per kind of card); split per rule below.
    groups = (c.topic, c.rule_ids)
    cards = func.count(distinct(f.card_uuid))
    shown, outcomes, reasons, suggestions, unknown = store.read(
        select(*groups, func.count(), func.sum(case((c.suggestions > 0, 1), else_=0))).group_by(*groups),
        select(*groups, f.outcome, cards).select_from(joined).group_by(*groups, f.outcome),
        select(*groups, f.override_code, func.max(f.override_display), cards).select_from(joined)
        .where(f.outcome == "overridden").group_by(*groups, f.override_code),
        select(*groups, cards).select_from(joined)
        .where(f.outcome == "accepted", f.accepted_suggestions.is_not(None), c.suggestions > 0).group_by(*groups),
        select(func.count(), cards).select_from(feedback_table.outerjoin(card_log_table, c.card_uuid == f.card_uuid))
        .where(c.card_uuid.is_(None)),
        report_faults=report_faults,
    )
    topics: dict[str, Tally] = {}
    rules: dict[str, Tally] = {}

    def tallies(topic: str, rule_ids: str) -> list[Tally]:
        return [topics.setdefault(topic, Tally()), *(rules.setdefault(rule, Tally()) for rule in rule_ids.split())]

    for topic, rule_ids, count, with_suggestions in shown:
        for tally in tallies(topic, rule_ids):
            tally.shown += count
            tally.with_suggestions += int(with_suggestions or 0)
    for topic, rule_ids, outcome, count in outcomes:
        for tally in tallies(topic, rule_ids):
            if outcome == "accepted":
                tally.accepted += count
            else:
                tally.overridden += count
    for topic, rule_ids, code, display, count in reasons:
        for tally in tallies(topic, rule_ids):
            key = code or NO_REASON
            tally.reasons[key] = tally.reasons.get(key, 0) + count
            if code and display:
                tally.displays.setdefault(code, display)
    for topic, rule_ids, count in suggestions:
        for tally in tallies(topic, rule_ids):
            tally.suggestion_accepted += count
    unknown_items, unknown_cards = unknown[0]
    return Report(as_of, dict(sorted(topics.items())), dict(sorted(rules.items())), unknown_items, unknown_cards)


def report_text(database_url: str, now: datetime) -> str:
    """``knee-cds report``: the report of the database at ``database_url`` (DATABASE_URL, as the service reads it).
    A ConfigurationError when it names a SQLite file that does not exist (a report creates no database), a
    ServiceUnavailable when the database cannot be read."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).is_file():
        raise ConfigurationError(f"no SQLite database at {url.database} (DATABASE_URL)")
    store = FeedbackStore(database_url)
    try:
        return render_text(compute(store, now, report_faults=False))
    finally:
        store.dispose()


# --- text --------------------------------------------------------------------------------------------------------------

def _table(title: str, tallies: dict[str, Tally]) -> list[str]:
    width = max([len(title), *map(len, tallies)])
    lines = [f"{title:<{width}}  {'shown':>6}  {'accepted':>8}  {'overridden':>10}  suggestions accepted"]
    for name, tally in tallies.items():
        lines.append(f"{name:<{width}}  {tally.shown:>6}  {tally.accepted:>8}  {tally.overridden:>10}  "
                     f"{tally.suggestion_acceptance()}")
        lines += [f"    overridden, {code}{f' ({display[:80]})' if display else ''}: {cards}"
                  for code, display, cards in tally.reason_lines()]
    return lines


def render_text(report: Report) -> str:
    if not report.topics and not report.unknown_items:
        return f"knee-cds card report as of {report.as_of:%Y-%m-%d %H:%M %Z}: no cards logged and no feedback yet\n"
    lines = [f"knee-cds card report as of {report.as_of:%Y-%m-%d %H:%M %Z}",
             "Cards shown (card log) and what clinicians did with them (feedback, joined by card uuid).", ""]
    lines += _table("topic", report.topics) + [""] + _table("rule", report.rules) + [""]
    lines.append(f"Feedback on cards the card log does not hold: {report.unknown_items} item(s) naming "
                 f"{report.unknown_cards} card(s)")
    return "\n".join(lines) + "\n"


# --- HTML --------------------------------------------------------------------------------------------------------------

COLUMNS = ("shown", "accepted", "overridden", "suggestions accepted")
# Presentation attributes only (no style attribute or element): the page's Content-Security-Policy allows no styles.
_BAR_COLOURS = {"shown": "#4a6fa5", "accepted": "#2e7d32", "overridden": "#c62828", "suggestions accepted": "#6d4c41",
                "reason": "#ef9a9a"}
_LABEL_WIDTH, _BAR_WIDTH, _ROW = 300, 320, 22


def _bar_chart(topic: str, tally: Tally) -> str:
    """One horizontal bar per count of the topic, each override reason under its own bar, scaled to cards shown."""
    bars = [("shown", tally.shown, _BAR_COLOURS["shown"]), ("accepted", tally.accepted, _BAR_COLOURS["accepted"]),
            ("overridden", tally.overridden, _BAR_COLOURS["overridden"]),
            ("suggestions accepted", tally.suggestion_accepted, _BAR_COLOURS["suggestions accepted"])]
    bars += [(f"overridden, {code}", cards, _BAR_COLOURS["reason"]) for code, _display, cards in tally.reason_lines()]
    scale = max([tally.shown, *(value for _, value, _ in bars)]) or 1
    e = html.escape
    height = _ROW * len(bars)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{_LABEL_WIDTH + _BAR_WIDTH + 60}' height='{height}' "
             f"role='img' aria-labelledby='chart-{e(topic)}'><title id='chart-{e(topic)}'>{e(topic)}: "
             + ", ".join(f"{value} {e(label)}" for label, value, _ in bars) + "</title>"]
    for row, (label, value, colour) in enumerate(bars):
        y = row * _ROW
        length = round(_BAR_WIDTH * value / scale)
        parts.append(f"<text x='0' y='{y + 15}' font-family='sans-serif' font-size='13'>{e(label[:44])}</text>"
                     f"<rect x='{_LABEL_WIDTH}' y='{y + 4}' width='{length}' height='14' fill='{colour}'/>"
                     f"<text x='{_LABEL_WIDTH + length + 6}' y='{y + 15}' font-family='sans-serif' "
                     f"font-size='13'>{value}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _html_table(title: str, tallies: dict[str, Tally]) -> str:
    e = html.escape
    rows = [f"<table><thead><tr><th>{e(title)}</th>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
            + "<th>override reasons</th></tr></thead><tbody>"]
    for name, tally in tallies.items():
        reasons = "; ".join(f"<span title='{e(display)}'>{e(code)}</span>: {cards}"
                            for code, display, cards in tally.reason_lines())
        rows.append(f"<tr><th>{e(name)}</th><td>{tally.shown}</td><td>{tally.accepted}</td><td>{tally.overridden}</td>"
                    f"<td>{e(tally.suggestion_acceptance())}</td><td>{reasons}</td></tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def render_html(report: Report) -> str:
    e = html.escape
    as_of = e(f"{report.as_of:%Y-%m-%d %H:%M %Z}")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>knee-cds card analytics as of {as_of}</title></head><body>",
             f"<h1>Cards and what clinicians did with them, as of {as_of}</h1>",
             "<p>Cards shown (card log) and the feedback on them, joined by card uuid. A card with feedback of both "
             "outcomes counts under each; a card counts for each rule that made it.</p>",
             "<h2>By topic</h2>", _html_table("topic", report.topics)]
    for topic, tally in report.topics.items():
        parts += [f"<h3>{e(topic)}</h3>", _bar_chart(topic, tally)]
    parts += ["<h2>By rule</h2>", _html_table("rule", report.rules),
              "<h2>Feedback on unknown cards</h2>",
              f"<p id='unknown'>{report.unknown_items} feedback item(s) name {report.unknown_cards} card(s) the card log "
              "does not hold: never issued by this service, issued before the card log or past its retention, or "
              "dropped on the way to the database.</p>",
              "</body></html>"]
    return "".join(parts)
