"""The service registry: the one list that discovery, routing and prefetch handling all read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrefetchSpec:
    key: str
    template: str
    required: bool
    why: str


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
            "Works on FHIR R4 data."
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


_PATIENT = "{{context.patientId}}"

# What the rules read. Patient (age), Conditions (pain, diagnoses, risk factors) and Observations
# (exam findings, BMI, D-dimer) decide DVT and red-flag cards, so without them the service cannot
# answer safely; the others refine imaging and Wells items and are optional.
PATIENT_DATA: tuple[PrefetchSpec, ...] = (
    PrefetchSpec("patient", f"Patient/{_PATIENT}", True, "age (Ottawa, Wells applicability)"),
    PrefetchSpec("conditions", f"Condition?patient={_PATIENT}", True, "knee pain, diagnoses, risk factors"),
    PrefetchSpec("observations", f"Observation?patient={_PATIENT}", True, "exam findings, BMI, D-dimer"),
    PrefetchSpec("procedures", f"Procedure?patient={_PATIENT}", False, "prior imaging, recent surgery"),
    # All statuses: chemotherapy completed in the last 6 months still counts as active cancer (W-01).
    PrefetchSpec("medications", f"MedicationRequest?patient={_PATIENT}", False, "anticoagulants, oestrogens, chemo"),
    PrefetchSpec("encounters", f"Encounter?patient={_PATIENT}", False, "recent admission (bedridden)"),
    PrefetchSpec("reports", f"DiagnosticReport?patient={_PATIENT}", False, "imaging results"),
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


def service_by_id(service_id: str) -> ServiceDefinition | None:
    return next((s for s in SERVICES if s.id == service_id), None)
