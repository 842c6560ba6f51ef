"""The chart index as the facts read it: today, recency windows, evidence, the live conditions and observations."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from functools import cached_property
from typing import Any

from ..chart import ChartEntry, ChartIndex
from ..fhir_read import concept_label, label_of, value_text
from ..terminology import IMAGING_MODALITIES
from .types import Evidence

DEAD_OBSERVATION = {"entered-in-error", "cancelled"}


class Record:
    """The chart index as the facts read it: today, the recency window, evidence, live conditions and observations."""

    def __init__(self, index: ChartIndex, now: datetime):
        self.index = index
        self.now = now
        self.today = now.date()

    def within(self, when: date | None, days: int, undated: bool = False) -> bool:
        """G-03: a date in the last ``days`` days (today counts as day 0); an undated one as ``undated`` says."""
        if when is None:
            return undated
        return 0 <= (self.today - when).days <= days

    def ev(self, entry: ChartEntry, when: date | None = None, value: str | None = None,
           suspected: bool = False) -> Evidence:
        resource = entry.resource
        if value is None and entry.resource_type == "Observation" and resource.valueBoolean is None:
            value = value_text(resource)
        return Evidence(entry.reference, label_of(resource), entry.when if when is None else when, entry.side, value,
                        suspected)

    @cached_property
    def _conditions(self) -> tuple[ChartEntry, ...]:
        # Future-dated entries are not current data.
        return tuple(c for c in self.index.of("Condition") if (c.when or self.today) <= self.today)

    @cached_property
    def _observations(self) -> tuple[ChartEntry, ...]:
        return tuple(o for o in self.index.of("Observation")
                     if o.resource.status not in DEAD_OBSERVATION and (o.when or self.today) <= self.today)

    def conditions(self) -> Iterable[ChartEntry]:
        return self._conditions

    def live_observations(self) -> Iterable[ChartEntry]:
        return self._observations

    def observations_with(self, concept: str) -> list[ChartEntry]:
        """Live observations of a concept; of a G-07 concept (latest only), the newest that carries a value."""
        found = [o for o in self._observations if concept in o.concepts]
        latest = self.index.latest_only(concept)
        return found + [latest] if latest is not None else found

    def of(self, resource_type: str) -> tuple[ChartEntry, ...]:
        return self.index.of(resource_type)


def once(evidence: list[Evidence]) -> list[Evidence]:
    """Each resource once: one exam note can be both a leg sign and calf warmth, but it is one datum."""
    seen: set[str] = set()
    return [e for e in evidence if not (e.reference in seen or seen.add(e.reference))]


def modality_of(concepts: frozenset[str]) -> str | None:
    """The imaging modality of a resource's value sets (knee X-ray, MRI, ultrasound, venous duplex)."""
    return next((modality for modality, name in IMAGING_MODALITIES if name in concepts), None)


def med_label(request: Any) -> str:
    if request.medicationCodeableConcept is not None:
        return concept_label(request.medicationCodeableConcept) or "MedicationRequest"
    if request.medicationReference is not None and request.medicationReference.display:
        return request.medicationReference.display
    return "MedicationRequest"
