"""Cards step: findings to CDS Hooks cards, worded by the definitions in cards/cards.toml."""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any

from .facts import Evidence
from .knowledge import Knowledge
from .parse import Rejected
from .rules import DetailLine, Finding, Suggest

# Extension keys in reverse-domain notation under the service's namespace (CDS Hooks 2.0 §Extensions; card contract).
EXTENSION_NAMESPACE = "org.example.kneecds"
WELLS_EXTENSION = f"{EXTENSION_NAMESPACE}.wells"
EVIDENCE_EXTENSION = f"{EXTENSION_NAMESPACE}.evidence"
DATA_QUALITY_EXTENSION = f"{EXTENSION_NAMESPACE}.data-quality"

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

# One pre-coordinated SNOMED body site per side (card contract): the codings of one CodeableConcept are alternatives,
# so a side as a second coding could be read as the whole body site. Both sides: two bodySite entries.
_KNEE = {
    "right": ("6757004", "Structure of right knee region"),
    "left": ("82169009", "Structure of left knee region"),
    "unknown": ("72696002", "Knee region structure"),
}
_LOWER_LIMB = {
    "right": ("62175007", "Structure of right lower limb"),
    "left": ("32153003", "Structure of left lower limb"),
    "unknown": ("61685007", "Lower limb structure"),
}


def body_sites(region: dict[str, tuple[str, str]], side: str) -> list[dict[str, Any]]:
    """The ServiceRequest.bodySite of a study of this region on this side."""
    if side == "both":
        return body_sites(region, "right") + body_sites(region, "left")
    code, display = region.get(side, region["unknown"])
    site: dict[str, Any] = {"coding": [{"system": SNOMED, "code": code, "display": display}]}
    if side not in region:
        site["text"] = f"{display}, side not recorded"
    return [site]


def _by_side(side: str, right: tuple[str, str], left: tuple[str, str], both: tuple[str, str],
             unknown: tuple[str, str]) -> dict[str, str]:
    code, display = {"right": right, "left": left, "both": both}.get(side, unknown)
    return {"system": LOINC, "code": code, "display": display}


def _popliteal_us(side: str) -> dict[str, str]:
    # No artery-specific LOINC is verified (codes.md VS:popliteal-arterial-duplex): the popliteal-space
    # ultrasound codes serve both the cyst (K-08) and the artery (K-13) study; the CPT code tells them apart.
    return _by_side(side, ("26264-2", "US Popliteal space - right"), ("26263-4", "US Popliteal space - left"),
                    ("26262-6", "US Popliteal space - bilateral"), ("24881-5", "US Popliteal space"))


def _duplex_cpt(side: str, unilateral: str, bilateral: str, what: str) -> dict[str, str]:
    # One leg known: the unilateral study; both legs or side unknown: the complete bilateral study.
    if side in ("right", "left"):
        return {"system": CPT, "code": unilateral, "display": f"{what}; unilateral or limited study"}
    return {"system": CPT, "code": bilateral, "display": f"{what}; complete bilateral study"}


def orderable(kind: str, side: str) -> tuple[str, list[dict[str, str]], dict[str, tuple[str, str]] | None]:
    """(text, codings, body site) of an orderable study (card-contract.md: a CPT and a LOINC code)."""
    if kind == "xray-standing":
        return ("Knee radiographs, weight-bearing (standing AP and lateral)", [
            {"system": CPT, "code": "73562", "display": "Radiologic examination, knee; 3 views"},
            {"system": LOINC, "code": "24805-4", "display": "XR Knee AP and Lateral W standing"}], _KNEE)
    if kind == "xray-trauma":
        return ("Knee radiographs (3 views)", [
            {"system": CPT, "code": "73562", "display": "Radiologic examination, knee; 3 views"},
            {"system": LOINC, "code": "30788-4", "display": "XR Knee 3 Views"}], _KNEE)
    if kind == "mri":
        return ("MRI of the knee without IV contrast", [
            {"system": CPT, "code": "73721",
             "display": "Magnetic resonance imaging, any joint of lower extremity; without contrast material"},
            _by_side(side, ("26258-4", "MR Knee - right"), ("26257-6", "MR Knee - left"),
                     ("26256-8", "MR Knee - bilateral"), ("24802-1", "MR Knee"))], _KNEE)
    if kind == "us-knee":
        return ("Ultrasound of the knee and popliteal fossa", [
            {"system": CPT, "code": "76882", "display": "Ultrasound, limited, joint or focal evaluation of other "
                                                        "nonvascular extremity structure(s)"},
            _popliteal_us(side)], _KNEE)
    if kind == "us-popliteal-artery":
        return ("Arterial duplex ultrasound of the popliteal artery", [
            _duplex_cpt(side, "93926", "93925", "Duplex scan of lower extremity arteries"),
            _popliteal_us(side)], _KNEE)
    if kind == "venous-duplex":
        return ("Proximal leg vein ultrasound (venous duplex)", [
            _duplex_cpt(side, "93971", "93970", "Duplex scan of extremity veins"),
            _by_side(side, ("39443-7", "US.doppler Lower extremity vein - right"),
                     ("39432-0", "US.doppler Lower extremity vein - left"),
                     ("39420-5", "US.doppler Lower extremity vein - bilateral"),
                     ("30881-7", "US.doppler Lower extremity vein"))], _LOWER_LIMB)
    if kind == "d-dimer":
        return ("D-dimer test (quantitative)", [
            {"system": LOINC, "code": "48065-7", "display": "Fibrin D-dimer FEU [Mass/volume] in Platelet poor plasma"}],
            None)
    raise KeyError(kind)


def service_request(kind: str, patient_id: str, side: str, reasons: tuple[str, ...]) -> dict[str, Any]:
    text, codings, site = orderable(kind, side)
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"coding": codings, "text": text},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if site is not None:
        resource["bodySite"] = body_sites(site, side)
    if reasons:
        resource["reasonReference"] = [{"reference": r} for r in reasons]
    return resource


def _side_phrase(side: str) -> str:
    return {"right": "right ", "left": "left "}.get(side, "")


# How the "data left out" line names a record of each type (no references in the prose; they are in leftOut).
_RECORD_WORDS = {"Condition": "diagnosis record", "Observation": "observation", "Procedure": "procedure",
                 "MedicationRequest": "prescription", "Encounter": "visit record", "DiagnosticReport": "report",
                 "Patient": "patient record", "ServiceRequest": "order"}


class _DetailWriter:
    """Writes one card's lines: each datum once, in plain words with its date; the references and rule ids go to the
    card's evidence extension ({"reference", "date", "rules"}), never into the prose."""

    def __init__(self, card_rules: tuple[str, ...]):
        self.card_rules = card_rules
        self.shown: set[str] = set()
        self.cited: dict[str, dict[str, Any]] = {}

    def line(self, line: DetailLine) -> str | None:
        if isinstance(line, str):
            return line
        for evidence in line.evidence:
            self._cite(evidence, line.rules)
        new = [e for e in line.evidence if e.reference not in self.shown]
        if line.evidence and not new:  # every datum of the line is on the card already
            return f"{line.head} see above" if line.refer_back else None
        self.shown.update(e.reference for e in new)
        return " ".join([line.head, "; ".join(e.line() for e in new)]).strip()

    def block(self, lines: tuple[DetailLine, ...], heading: bool = True) -> str:
        """Lines written together; with `heading`, a first line left with nothing under it is left out too."""
        written = [text for line in lines if (text := self.line(line)) is not None]
        if heading and lines and isinstance(lines[0], str) and written == [lines[0]]:
            return ""
        return "\n".join(written)

    def _cite(self, evidence: Evidence, rules: tuple[str, ...]) -> None:
        item = self.cited.setdefault(evidence.reference, {"reference": evidence.reference})
        if evidence.when is not None:
            item["date"] = evidence.when.isoformat()
        item["rules"] = list(dict.fromkeys([*item.get("rules", self.card_rules), *rules]))

    def evidence(self) -> list[dict[str, Any]]:
        return list(self.cited.values()) or [{"rules": list(self.card_rules)}]


class RandomUuids:
    """Version-4 UUIDs as ``uuid.uuid4`` makes them, from the OS's random source read for 256 at a time: a getrandom
    system call for every card and suggestion cost ~1 % of a hook call's CPU on a virtual machine. A forked process
    (a gunicorn worker) starts with none, so no two processes hand out the same ones."""

    BATCH = 256

    def __init__(self) -> None:
        self._forget()
        this = weakref.ref(self)  # the fork hook stays registered for good; it must not keep this object alive
        os.register_at_fork(after_in_child=lambda: (uuids := this()) and uuids._forget())

    def _forget(self) -> None:
        self._pool, self._next, self._lock = b"", 0, threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._next >= len(self._pool):
                self._pool, self._next = os.urandom(16 * self.BATCH), 0
            raw = self._pool[self._next:self._next + 16]
            self._next += 16
        return str(uuid.UUID(bytes=raw, version=4))


def uuid4_text() -> str:
    return str(uuid.uuid4())


class CardBuilder:
    def __init__(self, knowledge: Knowledge, new_uuid: Callable[[], str] = uuid4_text):
        self.knowledge = knowledge
        self.new_uuid = new_uuid

    def build(self, finding: Finding, patient_id: str, rejected: tuple[Rejected, ...], today: date,
              missing: tuple[str, ...] = (), rules_url: str | None = None) -> dict[str, Any]:
        """The card of a finding; `missing`: the prefetch keys the call went on without (their gap lines);
        `rules_url`: where the rule pages are (".../rules/"), for the card's links; None: no links."""
        definition = self.knowledge.card(finding.card_id)
        source_def = self.knowledge.cards["sources"][definition["source"]]
        values = {
            **definition.get("summary_defaults", {}),
            "side_phrase": _side_phrase(finding.side),
            "score": finding.wells.score if finding.wells else "not scored",
            "leg_phrase": f"{finding.side} leg" if finding.side in ("left", "right") else "leg",
            **dict(finding.summary_values),
        }
        summary = definition["summary"].format_map(values)
        detail, evidence = self._detail(finding, definition, rejected, today, missing)
        indicator = finding.indicator or definition["indicator"]
        card: dict[str, Any] = {
            "uuid": self.new_uuid(),
            "summary": summary if len(summary) <= 140 else summary[:139] + "…",
            "detail": detail,
            "indicator": indicator,
            "source": self._source(definition, source_def, rules_url),
        }
        if rules_url:
            card["links"] = [{"label": f"How rule {rule} decides", "url": f"{rules_url}{rule}", "type": "absolute"}
                             for rule in finding.rules]
        reasons = definition.get("override_reasons")
        if reasons or indicator in ("warning", "critical"):
            card["overrideReasons"] = self.knowledge.cards["override_reason_sets"][reasons or "standard"]
        suggestions = [self._suggestion(s, definition, finding, patient_id) for s in finding.suggestions]
        if suggestions:
            card["suggestions"] = suggestions
            # Complementary orders (a D-dimer and the cyst ultrasound) may both be taken; alternatives to a draft not.
            several = len(suggestions) > 1 and all(s.replaces is None for s in finding.suggestions)
            card["selectionBehavior"] = "any" if several else "at-most-one"
        card["extension"] = {EVIDENCE_EXTENSION: evidence}
        if finding.wells is not None and definition["topic"].startswith("dvt-"):
            card["extension"][WELLS_EXTENSION] = finding.wells.extension()
        return card

    def _source(self, definition: dict[str, Any], source_def: dict[str, Any], rules_url: str | None) -> dict[str, Any]:
        own_page = definition["source"] == "rule-page"
        source: dict[str, Any] = {
            "label": f"knee-cds rule {definition['rule']}" if own_page else source_def["label"],
            "topic": {
                "system": self.knowledge.cards["topic_system"],
                "code": definition["topic"],
                "display": definition["topic_display"],
            },
        }
        if own_page and rules_url:
            source["url"] = f"{rules_url}{definition['rule']}"
        elif "url" in source_def:
            source["url"] = source_def["url"]
        return source

    def _detail(self, finding: Finding, definition: dict[str, Any], rejected: tuple[Rejected, ...],
                today: date, missing: tuple[str, ...]) -> tuple[str, list[dict[str, Any]]]:
        """The card's markdown detail, and the evidence extension of the chart data it rests on."""
        writer = _DetailWriter(finding.rules)
        parts = ["**Why this card:**\n" + writer.block(finding.evidence, heading=False)]
        if finding.wells is not None:
            parts.append(writer.block(finding.wells.lines()))
        parts.append("**What to do:**\n" + definition["recommendation"].strip())
        parts += [writer.block(p) if isinstance(p, tuple) else p for p in finding.extra]
        parts += [definition["folded"][card_id].strip() for card_id in finding.folded]
        if "disagreement" in definition and not (
                definition.get("disagreement_when") == "wells-unlikely" and finding.wells and finding.wells.likely):
            parts.append(definition["disagreement"].strip())
        gaps = self.knowledge.cards.get("gaps", {})
        parts += [gaps[key]["line"] for key in missing if key in gaps and definition["topic"] in gaps[key]["topics"]]
        caveat = Counter(_RECORD_WORDS.get(r.resource_type, "record") for r in rejected
                         if r.resource_type in finding.reads)
        if caveat:
            what = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in caveat.items())
            parts.append(f"**Data left out:** {what} could not be read and {'were' if caveat.total() > 1 else 'was'} "
                         "not considered, though it could have changed this advice.")
        parts.append(f"*Evaluated on {today.isoformat()}.*")
        return "\n\n".join(p for p in parts if p), writer.evidence()

    def _suggestion(self, suggest: Suggest, definition: dict[str, Any], finding: Finding,
                    patient_id: str) -> dict[str, Any]:
        label = definition["suggestion_labels"][suggest.label]
        actions: list[dict[str, Any]] = []
        if suggest.replaces is not None:
            actions.append({"type": "delete", "description": f"Remove the draft order: {suggest.replaces.label}",
                            "resourceId": suggest.replaces.reference})
        if suggest.orderable != "remove":
            reasons = finding.reasons
            request = service_request(suggest.orderable, patient_id, finding.side, reasons)
            actions.append({"type": "create", "description": request["code"]["text"], "resource": request})
        return {"label": label, "uuid": self.new_uuid(), "isRecommended": suggest.recommended, "actions": actions}
