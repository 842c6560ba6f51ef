"""FHIR dates as EHRs write them (rules.md G-11): every date form, zone-less dateTimes read in the service's zone."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

_ZONELESS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")
_DATE_KEYS = {"start", "end", "issued", "recordedDate", "authoredOn", "time", "lastUpdated", "date", "birthDate"}
_AGE_UNITS = {"a": 365.25, "mo": 30.4375, "wk": 7.0, "d": 1.0}


def _element(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def parse_fhir_date(value: Any, zone: tzinfo) -> tuple[date, datetime | None] | None:
    """A FHIR date, dateTime or instant: its calendar date as written, and an aware datetime when it has a time."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            return date(int(value), 1, 1), None
        if len(value) == 7:
            return date(int(value[:4]), int(value[5:7]), 1), None
        if len(value) == 10:
            return date.fromisoformat(value), None
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.date(), moment


def date_of(value: Any, zone: tzinfo) -> date | None:
    parsed = parse_fhir_date(value, zone)
    return parsed[0] if parsed else None


def _period(raw: dict[str, Any], key: str, zone: tzinfo, today: date) -> tuple[date | None, date | None] | None:
    """(start, recency date) of a Period element: start, or end when no start; recency by end, today while open."""
    period = _element(raw, key)
    start, end = date_of(period.get("start"), zone), date_of(period.get("end"), zone)
    if start is None and end is None:
        return None
    return start or end, end if end is not None else today


def _age_date(age: dict[str, Any], birth: date | None) -> date | None:
    value, unit = age.get("value"), age.get("code") or age.get("unit") or "a"
    if birth is None or not isinstance(value, int | float) or isinstance(value, bool):
        return None
    days = _AGE_UNITS.get(unit if unit in _AGE_UNITS else {"years": "a", "year": "a"}.get(str(unit), "a"), 365.25)
    return birth + timedelta(days=float(value) * days)


# rules.md G-11: where each type's clinical date is, in order; the first present wins.
_DATE_ELEMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "Observation": (("instant", "effectiveDateTime"), ("period", "effectivePeriod"), ("instant", "effectiveInstant"),
                    ("instant", "issued")),
    "Condition": (("instant", "onsetDateTime"), ("period", "onsetPeriod"), ("age", "onsetAge"),
                  ("instant", "onsetString"), ("instant", "recordedDate")),
    "Procedure": (("instant", "performedDateTime"), ("period", "performedPeriod")),
    "MedicationRequest": (("instant", "authoredOn"),),
    "ServiceRequest": (("instant", "authoredOn"),),
    "Encounter": (("period", "period"),),
}
_DATE_ELEMENTS["DiagnosticReport"] = _DATE_ELEMENTS["Observation"]
_NO_DATE: tuple[date | None, date | None, datetime | None] = (None, None, None)


def clinical_dates(rtype: str, raw: dict[str, Any], zone: tzinfo, today: date,
                   birth: date | None) -> tuple[date | None, date | None, datetime | None]:
    """(clinical date, recency date, instant) in the order rules.md G-11 gives for each type.

    A period counts by its start as the clinical date and by its end (today while open) for recency windows;
    an onsetString counts only when it parses as a date; an onsetAge is added to the birth date.
    """
    for kind, element in _DATE_ELEMENTS.get(rtype, ()):
        if kind == "instant":
            parsed = parse_fhir_date(raw.get(element), zone)
            if parsed:
                return parsed[0], parsed[0], parsed[1]
        elif kind == "period":
            period = _period(raw, element, zone, today)
            if period:
                return period[0], period[1], None
        elif raw.get(element) is not None:  # an age
            onset = _age_date(_element(raw, element), birth)
            if onset is not None:
                return onset, onset, None
    return _NO_DATE


def with_zones(value: Any, zone: tzinfo, key: str = "") -> Any:
    """A copy with every zone-less dateTime given the service's zone (G-11), as R4 validation requires."""
    if isinstance(value, dict):
        return {k: with_zones(v, zone, k) for k, v in value.items()}
    if isinstance(value, list):
        return [with_zones(v, zone, key) for v in value]
    if isinstance(value, str) and (key in _DATE_KEYS or key.endswith(("DateTime", "Instant"))) and _ZONELESS.match(value):
        moment = datetime.fromisoformat(value).replace(tzinfo=zone)
        return moment.isoformat(timespec="seconds" if moment.microsecond == 0 else "microseconds")
    return value


def has_zoneless(value: Any, key: str = "") -> bool:
    if isinstance(value, dict):
        return any(has_zoneless(v, k) for k, v in value.items())
    if isinstance(value, list):
        return any(has_zoneless(v, key) for v in value)
    return isinstance(value, str) and "T" in value and bool(_ZONELESS.match(value)) and (
        key in _DATE_KEYS or key.endswith(("DateTime", "Instant")))
