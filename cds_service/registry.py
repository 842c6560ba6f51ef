"""The service registry: the one list that discovery, routing and prefetch handling all read.

Each prefetch key asks for what the rules read (issue: long charts must answer): code-filtered
searches where the value sets are explicit code lists, the newest few where only the latest value
matters (G-07), and the most recent first, down to the oldest date a rule looks at, for the types whose
codes are ranges or free text. Prefetch templates cannot compute dates (CDS Hooks 2.0), so a windowed
key is sorted newest first and the service pages until the window is covered; the FHIR fallback adds
the date bound to the search itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from .terminology import IMAGING_MODALITIES, Terminology

_PATIENT = "{{context.patientId}}"
_DATE_PARAMETER = {"MedicationRequest": "authoredon"}  # the others search their clinical date as `date`
PAGE_SIZE = 100


@dataclass(frozen=True)
class PrefetchSpec:
    key: str
    resource_type: str
    required: bool
    why: str
    read: bool = False  # an instance read (Patient/{id}) rather than a search
    code_sets: tuple[str, ...] = ()  # value sets whose explicit codes filter the search
    exclude_sets: tuple[str, ...] = ()  # ... less these (read by a key of their own)
    codes: tuple[str, ...] = ()  # the resolved code filter
    category: str | None = None
    status: str | None = None
    window_days: int | None = None  # newest first, down to this many days back (the rules' longest look-back)
    newest: int | None = None  # only the newest few (G-07: the latest value wins)

    @property
    def date_parameter(self) -> str:
        return _DATE_PARAMETER.get(self.resource_type, "date")

    def _parameters(self) -> list[str]:
        parameters = [f"patient={_PATIENT}"]
        if self.codes:
            parameters.append("code=" + ",".join(self.codes))
        if self.category:
            parameters.append(f"category={self.category}")
        if self.status:
            parameters.append(f"status={self.status}")
        if self.window_days is not None or self.newest is not None:
            parameters.append(f"_sort=-{self.date_parameter}")
        parameters.append(f"_count={self.newest or PAGE_SIZE}")
        return parameters

    @property
    def template(self) -> str:
        if self.read:
            return f"{self.resource_type}/{_PATIENT}"
        return f"{self.resource_type}?" + "&".join(self._parameters())

    def fallback(self, today: date) -> str:
        """The query the service itself sends to fhirServer: the template, date-bounded where it has a window."""
        if self.window_days is None:
            return self.template
        since = today - timedelta(days=self.window_days)
        parameters = self._parameters()
        parameters.insert(1, f"{self.date_parameter}=ge{since.isoformat()}")
        return f"{self.resource_type}?" + "&".join(parameters)

    def resolved(self, terms: Terminology) -> PrefetchSpec:
        if not self.code_sets:
            return self
        names = [n for n in self.code_sets if n not in self.exclude_sets]
        return replace(self, codes=terms.explicit_codes(tuple(names)))

    def selects(self, resource: dict[str, Any]) -> bool:
        """Whether this key's search would return the resource (the CLI builds prefetch from a bundle with it)."""
        if resource.get("resourceType") != self.resource_type:
            return False
        if self.status and resource.get("status") != self.status:
            return False
        if self.category and self.category not in {
                c.get("code") for concept in resource.get("category") or [] if isinstance(concept, dict)
                for c in concept.get("coding") or [] if isinstance(c, dict)}:
            return False
        if self.codes:
            concepts = resource.get("code") if self.resource_type != "MedicationRequest" else None
            found = {c.get("code") for c in (concepts or {}).get("coding") or [] if isinstance(c, dict)}
            return bool(found & set(self.codes))
        return True


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchSpec, ...]

    @property
    def usage_requirements(self) -> str:
        required = ", ".join(p.key for p in self.prefetch if p.required)
        optional = ", ".join(p.key for p in self.prefetch if not p.required)
        return (
            f"Needs {required} (prefetched, or readable from fhirServer with fhirAuthorization); "
            f"without them the service answers 412. Uses {optional} when available. "
            "Windowed keys are sorted newest first; the service reads further pages from fhirServer until the "
            "window is covered. Works on FHIR R4 data."
        )

    def discovery_entry(self) -> dict:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {p.key: p.template for p in self.prefetch},
            "usageRequirements": self.usage_requirements,
        }


EXAM_WINDOW_DAYS = 28  # G-09: leg signs 4 weeks, exam findings 14 days
FEVER_WINDOW_DAYS = 2  # RF-06: a temperature of 38.0 °C or more in the last 48 hours
HISTORY_WINDOW_DAYS = 183  # W-01: cancer treatment within 6 months is the longest look-back of these types
_IMAGING = tuple(name for _, name in IMAGING_MODALITIES)
_LATEST = (("latest-bmi", "bmi", False), ("latest-body-weight", "body-weight", False),
           ("latest-body-height", "body-height", False), ("latest-pain-score", "pain-score", True),
           ("latest-pregnancy-status", "pregnancy-status", True))

# What the rules read. Patient (age), Conditions (pain, diagnoses, risk factors) and Observations
# (exam findings, D-dimer, pain score, pregnancy status) decide DVT and red-flag cards, so without them
# the service cannot answer safely; the others refine imaging, Wells items and risk factors.
PATIENT_DATA: tuple[PrefetchSpec, ...] = (
    PrefetchSpec("patient", "Patient", True, "age (Ottawa, Wells applicability)", read=True),
    PrefetchSpec("conditions", "Condition", True, "knee pain, diagnoses, risk factors"),
    PrefetchSpec("observations", "Observation", True, "coded exam findings, D-dimer, imaging results",
                 code_sets=("*",), exclude_sets=tuple(vs for _, vs, _ in _LATEST) + ("body-temperature",)),
    # Findings written only as text sit in examination Observations under local codes (G-10): the exam category,
    # newest first, for the longest look-back of the leg-sign rules. Vital signs and labs are not read this way.
    PrefetchSpec("exam-findings", "Observation", True,
                 f"examination findings written as text (last {EXAM_WINDOW_DAYS} days)", category="exam",
                 window_days=EXAM_WINDOW_DAYS),
    PrefetchSpec("recent-temperatures", "Observation", True, f"fever (last {FEVER_WINDOW_DAYS * 24} hours)",
                 code_sets=("body-temperature",), window_days=FEVER_WINDOW_DAYS),
    *(PrefetchSpec(key, "Observation", required, f"the latest {vs.replace('-', ' ')}", code_sets=(vs,), newest=3)
      for key, vs, required in _LATEST),
    PrefetchSpec("procedures", "Procedure", False, "knee imaging on record", code_sets=_IMAGING),
    PrefetchSpec("recent-procedures", "Procedure", False, "recent surgery, casts, chemotherapy, delivery",
                 window_days=HISTORY_WINDOW_DAYS),
    PrefetchSpec("active-medications", "MedicationRequest", False, "anticoagulants, oestrogens", status="active"),
    # All statuses: chemotherapy completed in the last 6 months still counts as active cancer (W-01).
    PrefetchSpec("recent-medications", "MedicationRequest", False, "chemotherapy in the last 6 months",
                 window_days=HISTORY_WINDOW_DAYS),
    PrefetchSpec("recent-encounters", "Encounter", False, "recent admission (bedridden), chemotherapy visits",
                 window_days=HISTORY_WINDOW_DAYS),
    PrefetchSpec("reports", "DiagnosticReport", False, "imaging results", code_sets=_IMAGING),
)

SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id="posterior-knee-pain",
        hook="patient-view",
        title="Pain behind the knee",
        description=(
            "For a patient with pain behind the knee: which imaging fits, how likely a deep vein "
            "thrombosis is (two-level Wells, NICE NG158), red flags that need urgent action, and "
            "other possible causes."
        ),
        prefetch=PATIENT_DATA,
    ),
    ServiceDefinition(
        id="knee-imaging-select",
        hook="order-select",
        title="Knee and leg imaging order check (selection)",
        description=(
            "While a knee X-ray, knee MRI, knee ultrasound or leg venous duplex is being chosen: "
            "says whether it is the indicated next step and offers the right study instead."
        ),
        prefetch=PATIENT_DATA,
    ),
    ServiceDefinition(
        id="knee-imaging-sign",
        hook="order-sign",
        title="Knee and leg imaging order check (signing)",
        description=(
            "At signing of a knee or leg imaging order: the same appropriateness and DVT-pathway "
            "checks as at selection."
        ),
        prefetch=PATIENT_DATA,
    ),
)


def resolve_services(terms: Terminology) -> tuple[ServiceDefinition, ...]:
    """The services with their code filters read from the value sets the rules use ("*" = every value set)."""
    every = tuple(sorted(terms.value_sets))

    def resolve(spec: PrefetchSpec) -> PrefetchSpec:
        return (replace(spec, code_sets=every) if spec.code_sets == ("*",) else spec).resolved(terms)

    return tuple(replace(s, prefetch=tuple(resolve(p) for p in s.prefetch)) for s in SERVICES)


def service_by_id(services: tuple[ServiceDefinition, ...], service_id: str) -> ServiceDefinition | None:
    return next((s for s in services if s.id == service_id), None)
