"""Imaging on record (G-08), draft orders, trauma details (mechanism, pain score, fever, prior knee surgery)."""

from __future__ import annotations

import re
from datetime import date, datetime

from ..fhir_read import finding_code, label_of, near, observation_result, report_result, text_result
from .record import Record, modality_of
from .types import DraftOrder, Evidence, ImagingOnRecord, PainScore
from .wells import is_surgery

_KNEE_TEXT = re.compile(r"\bknee\b", re.I)


def draft_orders(rec: Record) -> tuple[DraftOrder, ...]:
    out = []
    for order in rec.index.drafts:
        modality = modality_of(order.concepts)
        if modality is None and "d-dimer-order" in order.concepts:
            modality = "d-dimer"
        out.append(DraftOrder(order.reference, modality, label_of(order.resource), order.side))
    return tuple(out)


def imaging_on_record(rec: Record) -> list[ImagingOnRecord]:
    results = []
    reports = []
    for entry in rec.of("DiagnosticReport"):
        if entry.resource.status in ("entered-in-error", "cancelled"):
            continue
        modality = modality_of(entry.concepts)
        if modality:
            reports.append((modality, entry.when, entry))
    result_observations = []
    for entry in rec.live_observations():
        modality = modality_of(entry.concepts)
        if modality:
            result_observations.append((modality, entry.when, entry))
    for entry in rec.of("Procedure"):
        if entry.resource.status != "completed":
            continue
        modality = modality_of(entry.concepts)
        if not modality:
            continue
        when = entry.recent
        result = text_result(entry.text)
        if result == "unknown":
            result = linked_result(rec, modality, when, reports, result_observations)
        results.append(ImagingOnRecord(modality, rec.ev(entry, when=when), result))
    for modality, _when, entry in reports:
        results.append(ImagingOnRecord(modality, rec.ev(entry), report_result(entry.resource)))
    # G-08: an Observation coded with a knee study's LOINC code is a study on record by itself
    # when no Procedure or report of that study stands beside it.
    recorded = [(i.modality, i.evidence.when) for i in results]
    for modality, when, entry in result_observations:
        if not any(m == modality and (near(w, when) or near(when, w)) for m, w in recorded):
            results.append(ImagingOnRecord(modality, rec.ev(entry), observation_result(entry.resource)))
    return results


def linked_result(rec: Record, modality, when, reports, observations) -> str:
    for other_modality, other_when, entry in reports:
        if other_modality == modality and near(when, other_when):
            return report_result(entry.resource)
    for other_modality, other_when, entry in observations:
        if other_modality == modality and near(when, other_when):
            return observation_result(entry.resource)
    return "unknown"


def injury_mechanism(rec: Record) -> str | None:
    for entry in rec.live_observations():
        observation = entry.resource
        if finding_code(observation) == "injury-mechanism":
            value = observation.valueString or (observation.valueCodeableConcept.text
                                                if observation.valueCodeableConcept else None)
            if value:
                return value.strip().lower()
    return None


def latest_pain_score(rec: Record) -> PainScore | None:
    scores = []
    for entry in rec.observations_with("pain-score"):
        observation = entry.resource
        value = observation.valueQuantity.value if observation.valueQuantity is not None else \
            observation.valueInteger
        if value is not None:
            scores.append((entry.when or date.min, float(value), entry))
    if not scores:
        return None
    _, value, entry = max(scores, key=lambda s: s[0])
    return PainScore(rec.ev(entry, value=f"{value:g}/10"), value)


def fever_evidence(rec: Record, current) -> list[Evidence]:
    out = [e for e in current.get("fever", ()) if rec.within(e.when, 2, undated=True)]
    for entry in rec.live_observations():
        observation = entry.resource
        if "body-temperature" in entry.concepts and observation.valueQuantity is not None \
                and observation.valueQuantity.value is not None:
            celsius = float(observation.valueQuantity.value)
            unit = observation.valueQuantity.code or observation.valueQuantity.unit or "Cel"
            if unit in ("[degF]", "degF", "°F"):
                celsius = (celsius - 32) * 5 / 9
            at = observation.effectiveDateTime
            recent = (rec.now - at).total_seconds() <= 48 * 3600 if isinstance(at, datetime) else \
                rec.within(entry.recent, 2)
            if celsius >= 38.0 and recent:
                out.append(rec.ev(entry, value=f"{celsius:.1f} °C"))
    return out


def prior_knee_surgery(rec: Record, current) -> list[Evidence]:
    out = list(current.get("knee-prosthesis", ()))
    for entry in rec.of("Procedure"):
        if entry.resource.status == "completed" and modality_of(entry.concepts) is None and \
                is_surgery(entry) and _KNEE_TEXT.search(entry.text):
            out.append(rec.ev(entry))
    return out
