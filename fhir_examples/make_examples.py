"""Builds the sample FHIR bundles of fhir_examples/ and their manifest.

    .venv/bin/python fhir_examples/make_examples.py          # rewrite the bundles and manifest.json
    .venv/bin/python fhir_examples/make_examples.py --check  # exit 1 if the committed files differ

Each scenario is a small patient record dated around its reference day. The manifest says, per
bundle, the reference day and what each hook must answer (card topics and indicators, and the
Wells result where a DVT card carries one); ``rule_checks`` pairs a bundle where a rule's trigger
is present with its nearest miss, and names the token the trigger must show (a rule id in a card,
a Wells criterion, a topic, or an ordered code). The tests read the manifest; expected outputs are
written here once.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TODAY = date(2026, 11, 20)
SN = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
PKP = "http://example.org/fhir/CodeSystem/pkp-finding"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SIDE = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}


def ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


class Record:
    """A patient record under construction."""

    def __init__(self, pid: str, age: int = 52, gender: str = "female"):
        self.pid = pid
        birth = date(TODAY.year - age, 3, 2) if (TODAY.month, TODAY.day) >= (3, 2) else date(TODAY.year - age - 1, 3, 2)
        self.resources: list[dict[str, Any]] = [{
            "resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth.isoformat(),
            "name": [{"family": "Example", "given": [pid]}]}]
        self.n = 0

    def _id(self, prefix: str) -> str:
        # Prefixed with the patient's id: every resource id is unique across the samples, so they can all be loaded
        # into one FHIR server without one patient's Conditions replacing another's.
        self.n += 1
        return f"{self.pid}-{prefix}-{self.n}"

    def subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def condition(self, codings: list[tuple[str, str, str]], text: str, onset_days: int | None = 30,
                  site: dict | None = None, clinical: str = "active", verification: str = "confirmed",
                  rid: str | None = None) -> Record:
        resource: dict[str, Any] = {
            "resourceType": "Condition", "id": rid or self._id("cond"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": clinical}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": verification}]},
            "code": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings], "text": text},
            "subject": self.subject(),
        }
        if not codings:
            del resource["code"]["coding"]
        if onset_days is not None:
            resource["onsetDateTime"] = ago(onset_days)
            resource["recordedDate"] = ago(onset_days)
        if site:
            resource["bodySite"] = [site]
        self.resources.append(resource)
        return self

    def knee_pain(self, side: str = "right", onset_days: int = 100, where: str = "posterior", coding: str = "both",
                  **kw: Any) -> Record:
        icd = {"right": ("M25.561", "Pain in right knee"), "left": ("M25.562", "Pain in left knee")}[side]
        codings = []
        if coding in ("both", "icd"):
            codings.append((ICD, *icd))
        if coding in ("both", "snomed"):
            codings.append((SN, "30989003", "Knee pain"))
        site = None
        text = f"Pain in the {side} knee"
        if where == "posterior":
            text = f"Pain behind the {side} knee"
            site = {"coding": [{"system": SN, "code": "255551008", "display": "Posterior"},
                               {"system": SN, "code": SIDE[side][0], "display": SIDE[side][1]}],
                    "text": f"back of the {side} knee"}
        elif where == "anterior":
            text = f"Anterior {side} knee pain around the patella"
            site = {"text": f"front of the {side} knee"}
        elif where != "unknown":
            text = where
        if coding == "snomed" and where == "posterior":
            text = "Knee pain"
        return self.condition(codings, kw.pop("text", text), onset_days, kw.pop("site", site), **kw)

    def finding(self, code: str, value: Any = True, days: int = 1, side: str | None = None,
                status: str = "final") -> Record:
        resource: dict[str, Any] = {
            "resourceType": "Observation", "id": self._id(f"obs-{code}"), "status": status,
            "code": {"coding": [{"system": PKP, "code": code}]}, "subject": self.subject(),
            "effectiveDateTime": ago(days)}
        if isinstance(value, bool):
            resource["valueBoolean"] = value
        elif isinstance(value, str):
            resource["valueString"] = value
        else:
            number, unit = value
            resource["valueQuantity"] = {"value": number, "unit": unit, "system": "http://unitsofmeasure.org",
                                         "code": unit}
        if side:
            resource["bodySite"] = {"coding": [{"system": SN, "code": SIDE[side][0], "display": SIDE[side][1]}]}
        self.resources.append(resource)
        return self

    def observation(self, loinc: str, display: str, value: float | None, unit: str | None, days: int = 1,
                    at: str | None = None, interpretation: str | None = None, high: float | None = None,
                    value_code: tuple[str, str] | None = None) -> Record:
        resource: dict[str, Any] = {
            "resourceType": "Observation", "id": self._id("obs"), "status": "final",
            "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}], "text": display},
            "subject": self.subject(), "effectiveDateTime": at or ago(days)}
        if value is not None:
            resource["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                                         "code": unit}
        if value_code:
            resource["valueCodeableConcept"] = {"coding": [{"system": SN, "code": value_code[0],
                                                            "display": value_code[1]}]}
        if interpretation:
            resource["interpretation"] = [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                "code": interpretation}]}]
        if high is not None:
            resource["referenceRange"] = [{"high": {"value": high, "unit": unit}}]
        self.resources.append(resource)
        return self

    def procedure(self, codings: list[tuple[str, str, str]], text: str, days: int, side: str | None = None,
                  status: str = "completed", note: str | None = None) -> Record:
        resource: dict[str, Any] = {
            "resourceType": "Procedure", "id": self._id("proc"), "status": status,
            "code": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings], "text": text},
            "subject": self.subject(), "performedDateTime": ago(days)}
        if side:
            resource["bodySite"] = [{"coding": [{"system": SN, "code": SIDE[side][0], "display": SIDE[side][1]}]}]
        if note:
            resource["note"] = [{"text": note}]
        self.resources.append(resource)
        return self

    def knee_xray(self, side: str = "right", days: int = 60) -> Record:
        return self.procedure([(CPT, "73562", "Radiologic examination, knee; 3 views")], f"XR {side} knee 3 views",
                              days, side)

    def exam_note(self, note: str, days: int = 0) -> Record:
        """An examination Observation under a local code whose finding is written only in its note (G-10)."""
        self.resources.append({
            "resourceType": "Observation", "id": self._id("obs-exam"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "exam"}]}],
            "code": {"coding": [{"system": "http://hospital.example.org/codes/exam", "code": "LL-EXAM",
                                 "display": "Lower limb examination"}], "text": "Lower limb examination"},
            "subject": self.subject(), "effectiveDateTime": ago(days), "note": [{"text": note}]})
        return self

    def period(self, start_days: int, end_days: int | None) -> Record:
        """Dates the last resource by an effectivePeriod instead of a dateTime (G-11)."""
        resource = self.resources[-1]
        resource.pop("effectiveDateTime")
        resource["effectivePeriod"] = {"start": ago(start_days), **({"end": ago(end_days)} if end_days is not None
                                                                    else {})}
        return self

    def report(self, loinc: str, display: str, conclusion: str, days: int) -> Record:
        self.resources.append({
            "resourceType": "DiagnosticReport", "id": self._id("report"), "status": "final",
            "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}], "text": display},
            "subject": self.subject(), "effectiveDateTime": ago(days), "conclusion": conclusion})
        return self

    def medication(self, codings: list[tuple[str, str, str]], text: str, status: str = "active",
                   days: int = 30) -> Record:
        self.resources.append({
            "resourceType": "MedicationRequest", "id": self._id("med"), "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings],
                                          "text": text},
            "subject": self.subject(), "authoredOn": ago(days)})
        return self

    def encounter(self, reason: tuple[str, str, str], days: int, klass: str = "AMB", length: int = 0) -> Record:
        self.resources.append({
            "resourceType": "Encounter", "id": self._id("enc"), "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
            "subject": self.subject(), "period": {"start": ago(days), "end": ago(days - length)},
            "reasonCode": [{"coding": [{"system": reason[0], "code": reason[1], "display": reason[2]}],
                            "text": reason[2]}]})
        return self

    def draft(self, modality: str, side: str = "right", rid: str | None = None) -> Record:
        codes = {
            "mri": ([(CPT, "73721", "MRI any joint of lower extremity without contrast"),
                     (LOINC, "26258-4" if side == "right" else "26257-6", f"MR Knee - {side}")],
                    f"MRI {side} knee without contrast"),
            "xray": ([(CPT, "73562", "Radiologic examination, knee; 3 views")], f"XR {side} knee 3 views"),
            "duplex": ([(CPT, "93971", "Duplex scan of extremity veins; unilateral"),
                        (LOINC, "39443-7" if side == "right" else "39432-0", f"US.doppler Lower extremity vein - {side}")],
                       f"Venous duplex {side} leg"),
        }[modality]
        self.resources.append({
            "resourceType": "ServiceRequest", "id": rid or f"{self.pid}-draft-{modality}-1", "status": "draft",
            "intent": "order",
            "code": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codes[0]], "text": codes[1]},
            "subject": self.subject(),
            "bodySite": [{"coding": [{"system": SN, "code": SIDE[side][0], "display": SIDE[side][1]}]}]})
        return self

    def bundle(self) -> dict[str, Any]:
        from cds_service.samples import SAMPLE_TAG

        # Tagged as a sample, with its reference date as timestamp: the CLI moves its dates so that day is today.
        return {"resourceType": "Bundle", "meta": {"tag": [SAMPLE_TAG]}, "type": "collection",
                "timestamp": f"{TODAY.isoformat()}T12:00:00Z",
                "entry": [{"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}", "resource": r}
                          for r in self.resources]}


# Common codes ------------------------------------------------------------------------------------
CALF_PAIN_R = [(ICD, "M79.661", "Pain in right lower leg"), (SN, "300954003", "Pain in calf")]
CALF_PAIN_L = [(ICD, "M79.662", "Pain in left lower leg")]
HISTORY_DVT = [(ICD, "Z86.718", "Personal history of other venous thrombosis and embolism")]
BREAST_CANCER = [(ICD, "C50.911", "Malignant neoplasm of unspecified site of right female breast")]
BAKER_R = [(ICD, "M71.21", "Synovial cyst of popliteal space [Baker], right knee"),
           (SN, "240008008", "Synovial cyst of knee")]


def base(pid: str, age: int = 52, onset: int = 100, gender: str = "female", **kw: Any) -> Record:
    return Record(pid, age, gender).knee_pain(onset_days=onset, **kw)


def leg_signs(pid: str, age: int = 52, onset: int = 10, **kw: Any) -> Record:
    """Recent pain behind the right knee with right calf pain: the DVT pathway applies."""
    return base(pid, age, onset, **kw).condition(CALF_PAIN_R, "Right calf pain", 5)


def card(topic: str, indicator: str) -> dict[str, str]:
    return {"topic": topic, "indicator": indicator}


DIFF = card("differential", "info")
XRAY = card("imaging", "info")
UNLIKELY = card("dvt-unlikely", "info")


def scenarios() -> dict[str, tuple[Record, dict[str, Any], str]]:
    """name -> (record, expected answers per hook, description)."""
    s: dict[str, tuple[Record, dict[str, Any], str]] = {}

    def add(name: str, record: Record, description: str, **hooks: Any) -> None:
        s[name] = (record, {k.replace("_", "-"): v for k, v in hooks.items()}, description)

    # --- chronic pain and knee imaging ---------------------------------------------------------
    add("chronic-posterior-knee-pain", base("pkp-chronic-01").draft("mri"),
        "16 weeks of pain behind the right knee, no knee X-ray; a knee MRI is being ordered",
        patient_view={"cards": [XRAY, DIFF]},
        order_select={"cards": [card("imaging-appropriateness", "warning")]},
        order_sign={"cards": [card("imaging-appropriateness", "warning")]})
    add("chronic-pain-xray-on-record", base("pkp-xray-done-01").knee_xray("right", 60).draft("mri"),
        "Chronic posterior knee pain; a right knee X-ray 60 days ago (result not recorded); MRI ordered",
        patient_view={"cards": [DIFF]}, order_select={"cards": []}, order_sign={"cards": []})
    add("chronic-pain-xray-other-knee", base("pkp-xray-left-01").knee_xray("left", 60),
        "Chronic pain behind the RIGHT knee; the only X-ray on record is of the LEFT knee (G-08)",
        patient_view={"cards": [XRAY, DIFF]})
    add("chronic-pain-xray-result-observation", base("pkp-xray-obs-01").observation(
        "24805-4", "XR Knee AP and Lateral W standing - right", None, None, 50, interpretation="N"),
        "The only trace of the X-ray is a result Observation coded with the study's LOINC code, normal (G-08, K-06)",
        patient_view={"cards": [card("imaging", "info"), DIFF]})
    add("chronic-pain-normal-xray",
        base("pkp-normal-xray-01").knee_xray("right", 40).report("24805-4", "XR Knee AP and Lateral W standing",
                                                               "Normal right knee. No abnormality seen.", 40),
        "Chronic posterior knee pain with a normal weight-bearing X-ray: MRI is the next study (K-06)",
        patient_view={"cards": [card("imaging", "info"), DIFF]})
    add("pain-5-weeks", base("pkp-5wk-01", onset=35),
        "Pain behind the knee for 5 weeks: not yet chronic (K-05, K-14 near miss)",
        patient_view={"cards": [DIFF]})
    add("pain-6-weeks", base("pkp-6wk-01", onset=42),
        "Pain behind the knee for exactly 6 weeks: chronic",
        patient_view={"cards": [XRAY, DIFF]})
    add("no-knee-pain", Record("pkp-none-01", 46, "male").condition(
        [(SN, "38341003", "Hypertensive disorder")], "Hypertension", 2000).knee_pain(
        "left", 80, "anterior").draft("mri", "left"),
        "Hypertension and anterior (patellar) left knee pain: not pain behind the knee (G-05)",
        patient_view={"cards": []}, order_select={"cards": []}, order_sign={"cards": []})
    add("bakers-cyst", base("pkp-baker-01", onset=80).condition(BAKER_R, "Baker's cyst, right", 60),
        "Chronic posterior knee pain with a Baker's cyst and no ultrasound (K-08)",
        patient_view={"cards": [card("imaging", "info"), XRAY]})
    add("bakers-cyst-with-calf-swelling",
        base("pkp-baker-02", onset=80).condition(BAKER_R, "Baker's cyst, right", 60).condition(
            [(SN, "449707004", "Edema of lower leg")], "Swelling of the right calf", 3),
        "Baker's cyst with a swollen calf, Wells 0: D-dimer first, and the cyst ultrasound with a note that it does "
        "not exclude DVT (K-08 [2026-11-26], D-05)",
        patient_view={"cards": [UNLIKELY, card("imaging", "info"), XRAY],
                      "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("bakers-cyst-wells-likely",
        base("pkp-baker-03", onset=80).condition(BAKER_R, "Baker's cyst, right", 60).condition(
            [(SN, "449707004", "Edema of lower leg")], "Swelling of the right calf", 3).condition(
            BREAST_CANCER, "Breast cancer", 200).condition(HISTORY_DVT, "History of DVT", 900),
        "Baker's cyst with a swollen calf, Wells 2: the venous duplex shows the cyst too, no separate cyst ultrasound "
        "(K-08 near miss)",
        patient_view={"cards": [card("dvt-likely", "warning"), XRAY],
                      "wells": {"score": 2, "leg": "right", "criteria": ["active-cancer", "previous-dvt"]}})
    add("degenerative-meniscal-tear",
        base("pkp-menisc-old-01", age=63).condition([(ICD, "M23.221", "Derangement of posterior horn of medial "
                                                                      "meniscus due to old tear, right knee")],
                                                    "Old posterior horn medial meniscus tear, right", 200),
        "63-year-old with an old meniscal tear, no locking or giving way, no X-ray (K-09)",
        patient_view={"cards": [XRAY]})
    add("young-meniscal-tear-after-injury",
        base("pkp-menisc-young-01", age=28, onset=60).condition(
            [(ICD, "M23.221", "Derangement of posterior horn of medial meniscus due to old tear, right knee")],
            "Posterior horn medial meniscus tear, right", 50).condition(
            [(ICD, "S83.91XA", "Sprain of unspecified site of right knee, initial encounter")],
            "Twisting injury of the right knee playing football", 60),
        "28-year-old with a meniscal tear after a knee injury (K-09: MRI and orthopaedic referral)",
        patient_view={"cards": [card("imaging", "warning"), XRAY]})
    def after_xray_and_mri(pid: str, mri_conclusion: str) -> Record:
        """Chronic posterior knee pain with a normal X-ray 120 days ago and a knee MRI 60 days ago."""
        return base(pid, onset=150).knee_xray("right", 120).report(
            "24805-4", "XR Knee AP and Lateral W standing", "Normal", 120).procedure(
            [(CPT, "73721", "MRI lower extremity joint without contrast")], "MRI right knee", 60, "right").report(
            "26258-4", "MR Knee - right", mri_conclusion, 60)

    add("normal-knee-mri",
        after_xray_and_mri("pkp-mri-normal-01", "Normal MRI of the right knee; no meniscal or ligament tear."),
        "Persisting posterior knee pain after a normal knee MRI (K-10)",
        patient_view={"cards": [card("referred-pain", "info"), DIFF]})
    add("abnormal-knee-mri",
        after_xray_and_mri("pkp-mri-abn-01", "Horizontal tear of the posterior horn of the medial meniscus."),
        "Posterior knee pain after an MRI showing a tear: not the normal-MRI rule (K-10 near miss)",
        patient_view={"cards": [DIFF]})
    add("hamstring-strain", base("pkp-hamstring-01", onset=20).condition(
        [(ICD, "S76.311A", "Strain of muscle, fascia and tendon of the posterior muscle group at thigh level, "
                           "right thigh, initial encounter")], "Right hamstring strain after sprinting", 20),
        "Hamstring strain 20 days old: a clinical diagnosis that explains the pain; no imaging card (K-11 near miss)",
        patient_view={"cards": []})
    add("hamstring-avulsion-suspected", base("pkp-hamstring-03", onset=10).condition(
        [(ICD, "S76.311A", "Strain of muscle, fascia and tendon of the posterior muscle group at thigh level, "
                           "right thigh, initial encounter")],
        "Right hamstring strain, suspected proximal avulsion (palpable gap)", 10),
        "Hamstring strain with a suspected avulsion written on it: MRI (K-11)",
        patient_view={"cards": [card("imaging", "info")]})
    add("hamstring-strain-not-improving", base("pkp-hamstring-04", onset=10).condition(
        [(ICD, "S76.311A", "Strain of muscle, fascia and tendon of the posterior muscle group at thigh level, "
                           "right thigh, initial encounter")], "Right hamstring strain", 60).observation(
        "72514-3", "Pain severity 0-10", 5, "{score}", 3),
        "Hamstring strain 60 days old with pain recorded 3 days ago: not improving, MRI (K-11); as chronic posterior "
        "knee pain with no radiograph it also meets K-05 as the rule book words it",
        patient_view={"cards": [XRAY, card("imaging", "info")]})
    add("hamstring-strain-elite-athlete", base("pkp-hamstring-05", onset=10).condition(
        [(ICD, "S76.311A", "Strain of muscle, fascia and tendon of the posterior muscle group at thigh level, "
                           "right thigh, initial encounter")], "Right hamstring strain", 10).finding(
        "elite-athlete", True, 10),
        "Hamstring strain in an elite athlete: MRI (K-11)",
        patient_view={"cards": [card("imaging", "info")]})
    add("hamstring-strain-resolved", base("pkp-hamstring-02", onset=20).condition(
        [(ICD, "S76.311A", "Strain of posterior muscle group at thigh level, right thigh")], "Right hamstring strain",
        20, clinical="resolved"),
        "A resolved hamstring strain is history, not a current diagnosis (K-11 near miss)",
        patient_view={"cards": [DIFF]})
    add("tendinopathy", base("pkp-tendon-01", onset=20).condition(
        [(ICD, "M76.891", "Other specified enthesopathies of right lower limb, excluding foot")],
        "Semimembranosus tendinopathy, right", 15),
        "Semimembranosus tendinopathy explains the pain: no routine imaging card and no differential (K-12)",
        patient_view={"cards": []})
    add("popliteal-aneurysm", base("pkp-paa-01", age=71, onset=20).finding("pulsatile-popliteal-mass", True, 2,
                                                                           "right"),
        "Pulsatile mass behind the knee (K-13: arterial duplex of the popliteal artery)",
        patient_view={"cards": [card("imaging", "warning"), DIFF]})
    add("popliteal-mass-not-pulsatile",
        base("pkp-paa-02", age=71, onset=20).finding("pulsatile-popliteal-mass", False, 2, "right"),
        "Examined: no pulsatile mass (K-13 near miss)", patient_view={"cards": [DIFF]})
    add("sciatica", base("pkp-sciatica-01", onset=20).condition(
        [(ICD, "M54.31", "Sciatica, right side"), (SN, "23056005", "Sciatica")], "Right sciatica", 30),
        "Pain behind the knee with right sciatica (N-01: referred pain)",
        patient_view={"cards": [card("referred-pain", "info")]})
    add("sciatica-resolved", base("pkp-sciatica-02", onset=20).condition(
        [(ICD, "M54.31", "Sciatica, right side")], "Right sciatica", 400, clinical="resolved"),
        "Sciatica resolved a year ago (N-01 near miss)", patient_view={"cards": [DIFF]})

    # --- acute trauma: Ottawa, Pittsburgh, internal derangement ---------------------------------
    sprain = [(ICD, "S83.91XA", "Sprain of unspecified site of right knee, initial encounter")]
    add("injury-age-55", base("pkp-ottawa-55", age=55, onset=2).condition(sprain, "Right knee sprain", 2).finding(
        "injury-mechanism", "twisting", 2),
        "Knee injury 2 days ago, age 55, twisting: Ottawa positive on age alone (K-01, info)",
        patient_view={"cards": [card("imaging", "info"), DIFF]})
    add("injury-age-54", base("pkp-ottawa-54", age=54, onset=2).condition(sprain, "Right knee sprain", 2).finding(
        "injury-mechanism", "twisting", 2).draft("xray"),
        "Same injury at 54: Ottawa and Pittsburgh negative, no imaging needed (K-01 near miss, K-03)",
        patient_view={"cards": [DIFF]},
        order_select={"cards": [card("imaging-appropriateness", "info")]},
        order_sign={"cards": [card("imaging-appropriateness", "info")]})
    add("injury-fibular-tenderness",
        base("pkp-ottawa-fib", age=40, onset=2).condition(sprain, "Right knee sprain", 2).finding(
            "injury-mechanism", "twisting", 2).finding("fibular-head-tenderness", True, 2, "right").draft("xray"),
        "Knee injury with tenderness at the fibular head: Ottawa positive, X-ray (K-01; K-03 near miss)",
        patient_view={"cards": [card("imaging", "warning"), DIFF]}, order_select={"cards": []})
    add("injury-fall-age-51", base("pkp-pitt-51", age=51, onset=1).condition(sprain, "Right knee injury", 1).finding(
        "injury-mechanism", "fall", 1),
        "Fall onto the knee at 51: Pittsburgh positive (>50), Ottawa negative (<55) (K-02)",
        patient_view={"cards": [card("imaging", "warning"), DIFF]})
    add("injury-twist-age-51", base("pkp-pitt-twist", age=51, onset=1).condition(sprain, "Right knee injury", 1)
        .finding("injury-mechanism", "twisting", 1),
        "Twisting injury at 51: Pittsburgh needs a fall or blunt trauma (K-02 near miss)",
        patient_view={"cards": [DIFF]})
    add("injury-suspected-meniscal-tear",
        base("pkp-derange-01", age=35, onset=3).condition(sprain, "Right knee sprain", 3).finding(
            "injury-mechanism", "twisting", 3).condition(
            [(ICD, "S83.241A", "Other tear of medial meniscus, current injury, right knee, initial encounter")],
            "Suspected medial meniscus tear, right", 3, verification="provisional"),
        "Acute injury, decision rules negative, suspected meniscal tear: MRI (K-04)",
        patient_view={"cards": [card("imaging", "warning")]})
    add("injury-tear-cannot-bear-weight",
        base("pkp-derange-02", age=35, onset=3).condition(sprain, "Right knee sprain", 3).finding(
            "injury-mechanism", "twisting", 3).finding("unable-bear-weight-4-steps", True, 3).condition(
            [(ICD, "S83.241A", "Other tear of medial meniscus, current injury, right knee, initial encounter")],
            "Suspected medial meniscus tear, right", 3, verification="provisional"),
        "Same, but unable to bear weight: Ottawa positive, radiographs first (K-04 near miss; RF-02)",
        patient_view={"cards": [card("red-flag", "warning"), card("imaging", "warning")]})
    add("severe-pain-after-injury",
        base("pkp-rf02-01", age=30, onset=2).condition(sprain, "Right knee injury", 2).finding(
            "injury-mechanism", "twisting", 2).observation("72514-3", "Pain severity 0-10", 8, "{score}", 0),
        "Knee injury 2 days ago with pain 8/10 (RF-02)",
        patient_view={"cards": [card("red-flag", "warning"), DIFF]})
    add("moderate-pain-after-injury",
        base("pkp-rf02-02", age=30, onset=2).condition(sprain, "Right knee injury", 2).finding(
            "injury-mechanism", "twisting", 2).observation("72514-3", "Pain severity 0-10", 6, "{score}", 0),
        "Same injury with pain 6/10 (RF-02 near miss)", patient_view={"cards": [DIFF]})

    # --- red flags ------------------------------------------------------------------------------
    add("locked-knee", base("pkp-locked-01", onset=30).finding("knee-locking", True, 1, "right"),
        "Knee locking on examination (RF-03; K-09 MRI)",
        patient_view={"cards": [card("red-flag", "critical"), card("imaging", "critical"), DIFF]})
    add("not-locked-knee", base("pkp-locked-02", onset=30).finding("knee-locking", False, 1, "right"),
        "Examined: the knee does not lock (RF-03 near miss)", patient_view={"cards": [DIFF]})
    add("giving-way", base("pkp-giving-01", onset=30).condition(
        [(ICD, "M25.361", "Other instability, right knee"), (SN, "250102002", "Unstable knee")],
        "Right knee giving way", 20),
        "Knee giving way (RF-04; K-09 MRI; giving way is a symptom, so the differential still shows)",
        patient_view={"cards": [card("red-flag", "warning"), card("imaging", "warning"), DIFF]})
    add("giving-way-resolved", base("pkp-giving-02", onset=30).condition(
        [(ICD, "M25.361", "Other instability, right knee")], "Right knee giving way", 400, clinical="resolved"),
        "Giving way resolved long ago (RF-04 near miss)", patient_view={"cards": [DIFF]})
    add("knee-dislocation", base("pkp-disloc-01", age=25, onset=1).condition(
        [(ICD, "S83.104A", "Unspecified dislocation of right knee, initial encounter"),
         (SN, "58320001", "Traumatic dislocation of knee joint")], "Right knee dislocation", 1),
        "Knee dislocation (RF-05: threatened limb)",
        patient_view={"cards": [card("red-flag", "critical"), DIFF]})
    add("knee-dislocation-refuted", base("pkp-disloc-02", age=25, onset=1).condition(
        [(ICD, "S83.104A", "Unspecified dislocation of right knee, initial encounter")], "Right knee dislocation", 1,
        verification="refuted"),
        "Dislocation considered and refuted (RF-05 near miss, G-01)", patient_view={"cards": [DIFF]})
    add("hot-knee-with-fever", base("pkp-septic-01", onset=3).condition(
        [(ICD, "M25.461", "Effusion, right knee")], "Swollen right knee", 2).observation(
        "8310-5", "Body temperature", 38.4, "Cel", at=f"{TODAY.isoformat()}T08:00:00Z"),
        "Knee effusion with a temperature of 38.4 °C today (RF-06: possible septic arthritis)",
        patient_view={"cards": [card("red-flag", "critical"), DIFF]})
    add("knee-effusion-no-fever", base("pkp-septic-02", onset=3).condition(
        [(ICD, "M25.461", "Effusion, right knee")], "Swollen right knee", 2).observation(
        "8310-5", "Body temperature", 37.9, "Cel", at=f"{TODAY.isoformat()}T08:00:00Z"),
        "Knee effusion at 37.9 °C (RF-06 near miss)", patient_view={"cards": [DIFF]})
    add("compartment-syndrome", base("pkp-compartment-01", age=30, onset=1).condition(
        [(ICD, "T79.A21A", "Traumatic compartment syndrome of right lower extremity, initial encounter"),
         (SN, "111245009", "Compartment syndrome")], "Suspected compartment syndrome, right calf", 0,
        verification="provisional"),
        "Suspected compartment syndrome of the leg (RF-07)",
        patient_view={"cards": [card("red-flag", "critical"), DIFF]})
    add("compartment-syndrome-arm", base("pkp-compartment-02", age=30, onset=1).condition(
        [(ICD, "T79.A11A", "Traumatic compartment syndrome of right upper extremity, initial encounter")],
        "Compartment syndrome, right forearm", 0),
        "Compartment syndrome of the arm is not a leg red flag (RF-07 near miss)",
        patient_view={"cards": [DIFF]})

    # --- DVT pathway ----------------------------------------------------------------------------
    add("dvt-urgent-hot-calf",
        base("pkp-dvt-urgent-01", onset=5).condition(BREAST_CANCER, "Breast cancer, on treatment", 200).finding(
            "calf-warmth", True, 0, "right").finding("deep-vein-tenderness", True, 0, "right").finding(
            "calf-circumference-difference", (3.5, "cm"), 0, "right"),
        "Hot, tender, swollen right calf with active cancer (D-01, RF-01): one critical card with Wells 3",
        patient_view={"cards": [card("dvt-urgent", "critical"), DIFF],
                      "wells": {"score": 3, "leg": "right",
                                "criteria": ["active-cancer", "deep-vein-tenderness", "calf-swelling-3cm"]}})
    add("dvt-warm-calf-no-swelling", base("pkp-dvt-warm-01", onset=5).finding("calf-warmth", True, 0, "right"),
        "Warm calf without swelling or tenderness: not the urgent card (D-01 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("hot-swollen-calf-no-knee-pain",
        Record("pkp-dvt-noknee-01").finding("calf-warmth", True, 0, "right").condition(
            [(SN, "449707004", "Edema of lower leg")], "Swollen right calf", 1),
        "Hot swollen calf with no knee pain on record: still the urgent card (G-05 UNRESOLVED, conservative)",
        patient_view={"cards": [card("dvt-urgent", "critical")],
                      "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("dvt-likely-calf-3.0cm",
        leg_signs("pkp-wells-30").condition(HISTORY_DVT, "History of DVT", 800).finding(
            "calf-circumference-difference", (3.0, "cm"), 0, "right"),
        "Calf 3.0 cm larger and a previous DVT: Wells 2, DVT likely (W-06 edge, D-02)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF],
                      "wells": {"score": 2, "leg": "right", "criteria": ["calf-swelling-3cm", "previous-dvt"]}})
    add("dvt-calf-2.9cm",
        leg_signs("pkp-wells-29").condition(HISTORY_DVT, "History of DVT", 800).finding(
            "calf-circumference-difference", (2.9, "cm"), 0, "right"),
        "Calf 2.9 cm larger: not a Wells point; Wells 1, DVT unlikely (W-06 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 1, "leg": "right", "criteria": ["previous-dvt"]}})
    add("dvt-unlikely-calf-pain", leg_signs("pkp-dvt-unlikely-01"),
        "Right calf pain with pain behind the knee and nothing else: Wells 0, D-dimer first (D-03)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("dvt-unlikely-positive-d-dimer", leg_signs("pkp-dvt-dd-01").observation(
        "48065-7", "Fibrin D-dimer FEU", 900, "ng/mL", at=f"{TODAY.isoformat()}T09:00:00Z", high=500,
        interpretation="H"),
        "Wells 0 with a positive D-dimer this morning: proximal leg vein ultrasound (D-03)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("dvt-unlikely-negative-d-dimer", leg_signs("pkp-dvt-dd-02").observation(
        "48065-7", "Fibrin D-dimer FEU", 300, "ng/mL", at=f"{TODAY.isoformat()}T09:00:00Z", high=500,
        interpretation="N"),
        "Wells 0 with a negative D-dimer this morning: DVT unlikely, no scan (D-03 completed)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("dvt-urgent-exam-note", base("pkp-g10-note-01", onset=5).exam_note("R calf hot, swollen and tender."),
        "Hot, swollen, tender right calf written only in an exam Observation's note under a local code (G-10, D-01)",
        patient_view={"cards": [card("dvt-urgent", "critical"), DIFF],
                      "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("exam-note-negated", base("pkp-g10-note-02", onset=5).exam_note("No calf swelling, warmth or tenderness."),
        "The exam note negates every finding of its clause: no leg sign, no DVT card (G-10 near miss)",
        patient_view={"cards": [DIFF]})
    swollen_calf = [(SN, "449707004", "Edema of lower leg")]
    add("calf-warmth-period-ended-10-days-ago",
        base("pkp-g11-01", onset=5).condition(swollen_calf, "Swollen right calf", 10)
        .finding("calf-warmth", True, 0, "right").period(20, 10),
        "Calf warmth recorded over a period that ended 10 days ago: within 14 days by its end (G-11, D-01)",
        patient_view={"cards": [card("dvt-urgent", "critical"), DIFF],
                      "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("calf-warmth-period-ended-16-days-ago",
        base("pkp-g11-02", onset=5).condition(swollen_calf, "Swollen right calf", 10)
        .finding("calf-warmth", True, 0, "right").period(25, 16),
        "Calf warmth over a period that ended 16 days ago: outside the 14-day window (G-11 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    right_duplex = ("39443-7", "US.doppler Lower extremity vein - right")
    normal_scan = "No deep vein thrombosis. Normal compressibility of the right femoral and popliteal veins."
    wells_2 = {"score": 2, "leg": "right", "criteria": ["calf-swelling-3cm", "previous-dvt"]}

    def likely(pid: str) -> Record:
        return leg_signs(pid).condition(HISTORY_DVT, "History of DVT", 800).finding(
            "calf-circumference-difference", (3.0, "cm"), 0, "right")

    add("dvt-likely-negative-scan", likely("pkp-d10-01").report(*right_duplex, normal_scan, 3),
        "Wells 2 and a negative right leg vein scan 3 days ago, no D-dimer since: D-dimer, not a new scan (D-10)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF], "wells": wells_2})
    add("dvt-likely-negative-scan-9-days-ago", likely("pkp-d10-02").report(*right_duplex, normal_scan, 9),
        "Wells 2 and a negative scan 9 days ago: older than 7 days, the scan is offered again (D-10 near miss)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF], "wells": wells_2})
    add("dvt-likely-negative-scan-positive-d-dimer", likely("pkp-d10-03").report(*right_duplex, normal_scan, 3)
        .observation("48065-7", "Fibrin D-dimer FEU", 900, "ng/mL", 1, high=500, interpretation="H"),
        "Negative scan 3 days ago and a positive D-dimer since: repeat the scan 6 to 8 days after the first (D-10)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF], "wells": wells_2})
    add("dvt-likely-negative-scan-negative-d-dimer", likely("pkp-d10-04").report(*right_duplex, normal_scan, 3)
        .observation("48065-7", "Fibrin D-dimer FEU", 300, "ng/mL", 1, high=500, interpretation="N"),
        "Negative scan 3 days ago and a negative D-dimer since: DVT unlikely, another cause (D-10)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": wells_2})
    add("dvt-surgery-84-days", leg_signs("pkp-surgery-84").procedure(
        [(CPT, "27447", "Arthroplasty, knee, condyle and plateau; total knee arthroplasty")],
        "Total knee replacement, left", 84, "left"),
        "Major surgery 84 days ago: within 12 weeks, a Wells point (W-03 edge)",
        patient_view={"cards": [UNLIKELY, DIFF],
                      "wells": {"score": 1, "leg": "right", "criteria": ["bedridden-or-major-surgery"]}})
    add("dvt-knee-injection-10-days", leg_signs("pkp-injection-10").procedure(
        [(CPT, "20610", "Arthrocentesis, aspiration and/or injection, major joint or bursa")],
        "Steroid injection, right knee", 10, "right"),
        "A knee injection 10 days ago without anaesthesia is not major surgery (W-03 [2026-11-26] near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("dvt-knee-arthroscopy-10-days", leg_signs("pkp-arthroscopy-10").procedure(
        [(CPT, "29881", "Arthroscopy, knee, surgical; with meniscectomy")],
        "Right knee arthroscopy with partial meniscectomy", 10, "right"),
        "A knee arthroscopy 10 days ago is major surgery, anaesthesia type not recorded (W-03, conservative)",
        patient_view={"cards": [UNLIKELY, DIFF],
                      "wells": {"score": 1, "leg": "right", "criteria": ["bedridden-or-major-surgery"]}})
    add("dvt-surgery-92-days", leg_signs("pkp-surgery-92").procedure(
        [(CPT, "27447", "Arthroplasty, knee, condyle and plateau; total knee arthroplasty")],
        "Total knee replacement, left", 92, "left"),
        "Major surgery 92 days ago: outside 12 weeks (W-03 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("wells-merkel-cell-cancer", leg_signs("pkp-w01-c4a").condition(
        [(ICD, "C4A.9", "Merkel cell carcinoma, unspecified")], "Merkel cell carcinoma", 60),
        "Active Merkel cell carcinoma (C4A: a non-numeric ICD category) counts as active cancer (W-01)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 1, "leg": "right", "criteria": ["active-cancer"]}})
    add("wells-chemotherapy-encounter", leg_signs("pkp-w01-chemo").encounter(
        (ICD, "Z51.11", "Encounter for antineoplastic chemotherapy"), 40),
        "Chemotherapy 40 days ago, recorded as the reason for an encounter (W-01: treatment within 6 months)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 1, "leg": "right", "criteria": ["active-cancer"]}})
    add("wells-chemotherapy-encounter-old", leg_signs("pkp-w01-chemo-old").encounter(
        (ICD, "Z51.11", "Encounter for antineoplastic chemotherapy"), 200),
        "Chemotherapy 200 days ago: outside 6 months (W-01 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("wells-cancer-history-only", leg_signs("pkp-w01-z85").condition(
        [(ICD, "Z85.3", "Personal history of malignant neoplasm of breast")], "History of breast cancer", 2000),
        "Personal history of cancer (Z85) is not active cancer (W-01 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("wells-paraplegia", leg_signs("pkp-w02-01").condition(
        [(ICD, "G82.20", "Paraplegia, unspecified")], "Paraplegia", 2000),
        "Paraplegia (W-02)",
        patient_view={"cards": [UNLIKELY, DIFF],
                      "wells": {"score": 1, "leg": "right", "criteria": ["paralysis-or-immobilisation"]}})
    for code, rule, criterion in (("deep-vein-tenderness", "W-04", "deep-vein-tenderness"),
                                  ("entire-leg-swollen", "W-05", "entire-leg-swollen"),
                                  ("pitting-oedema-symptomatic-leg", "W-07", "pitting-oedema"),
                                  ("collateral-superficial-veins", "W-08", "collateral-superficial-veins")):
        add(f"wells-{code}", leg_signs(f"pkp-{rule.lower()}-yes").finding(code, True, 0, "right"),
            f"Examination finding {code} on the symptomatic leg ({rule})",
            patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 1, "leg": "right", "criteria": [criterion]}})
        add(f"wells-{code}-absent", leg_signs(f"pkp-{rule.lower()}-no").finding(code, False, 0, "right"),
            f"Examination finding {code} recorded as absent ({rule} near miss)",
            patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("wells-pe-history-only", leg_signs("pkp-w09-pe").condition(
        [(ICD, "Z86.711", "Personal history of pulmonary embolism")], "History of pulmonary embolism", 900),
        "A previous PE alone is not the previous-DVT item (W-09 near miss), but it is a VTE risk factor (R-07)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("wells-resolved-dvt", leg_signs("pkp-w09-resolved").condition(
        [(ICD, "I82.401", "Acute embolism and thrombosis of unspecified deep veins of right lower extremity")],
        "DVT right leg", 900, clinical="resolved"),
        "A resolved DVT still counts as previously documented DVT (W-09, G-02)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 1, "leg": "right", "criteria": ["previous-dvt"]}})
    add("wells-dvt-entered-in-error", leg_signs("pkp-w09-eie").condition(
        [(ICD, "I82.401", "Acute embolism and thrombosis of unspecified deep veins of right lower extremity")],
        "DVT right leg", 900, verification="entered-in-error"),
        "A DVT entered in error is ignored (G-02 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("wells-alternative-diagnosis", leg_signs("pkp-w10-yes").finding("wells-alternative-diagnosis", True, 0),
        "Clinician recorded an alternative diagnosis at least as likely as DVT (W-10, -2)",
        patient_view={"cards": [UNLIKELY, DIFF],
                      "wells": {"score": -2, "leg": "right", "criteria": ["alternative-diagnosis"]}})
    add("calf-strain-with-calf-pain", leg_signs("pkp-d05-01").condition(
        [(ICD, "S86.111A", "Strain of other muscle(s) and tendon(s) of posterior muscle group at lower leg level, "
                           "right leg, initial encounter")], "Right calf strain", 5),
        "A calf strain does not lower Wells by itself (W-10 near miss) and adds a mimic warning (D-05); "
        "5 days old, it needs no imaging card (K-11)",
        patient_view={"cards": [UNLIKELY],
                      "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("pregnant-leg-signs", leg_signs("pkp-p01-01", age=31).condition(
        [(ICD, "Z3A.24", "24 weeks gestation of pregnancy"), (SN, "77386006", "Pregnancy")], "Pregnant", 170),
        "Pregnant (24 weeks) with calf pain: compression duplex directly, no Wells (P-01, W-12)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF]})
    add("pregnant-left-calf-pain", base("pkp-p01-03", age=31, onset=10).condition(CALF_PAIN_L, "Left calf pain", 5)
        .condition([(ICD, "Z3A.24", "24 weeks gestation of pregnancy")], "Pregnant", 170),
        "Pregnant, pain behind the RIGHT knee, LEFT calf pain: in pregnancy a sign of either leg counts (P-01)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF]})
    add("stale-pregnancy-leg-signs", leg_signs("pkp-p01-02", age=31).condition(
        [(ICD, "Z3A.24", "24 weeks gestation of pregnancy")], "Pregnant", 415),
        "A pregnancy entry from 415 days ago is stale (R-05: 42 weeks), so the Wells pathway applies (P-01 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("postpartum-leg-signs", leg_signs("pkp-p02-01", age=33).condition(
        [(ICD, "O80", "Encounter for full-term uncomplicated delivery")], "Vaginal delivery", 31),
        "Delivery 31 days ago with calf pain: duplex directly, Wells shown (P-02)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF],
                      "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("postpartum-9-weeks-leg-signs", leg_signs("pkp-p02-02", age=33).condition(
        [(ICD, "O80", "Encounter for full-term uncomplicated delivery")], "Vaginal delivery", 61),
        "Delivery 61 days ago: beyond 6 weeks, risk still raised (P-02 near miss, R-05 shown)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("under-18-leg-signs", leg_signs("pkp-d09-01", age=16),
        "16-year-old with calf pain: Wells not validated, compression ultrasound (D-09)",
        patient_view={"cards": [card("dvt-likely", "warning"), DIFF]})
    add("age-18-leg-signs", leg_signs("pkp-d09-02", age=18),
        "18-year-old: the adult Wells pathway applies (D-09 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("known-recent-dvt", leg_signs("pkp-d08-01").condition(
        [(ICD, "I82.4Y1", "Acute embolism and thrombosis of unspecified deep veins of right proximal lower "
                          "extremity")], "Proximal DVT right leg", 50),
        "DVT of the right leg diagnosed 50 days ago: do not re-run the pathway (D-08)",
        patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("old-dvt", leg_signs("pkp-d08-02").condition(
        [(ICD, "I82.4Y1", "Acute embolism and thrombosis of unspecified deep veins of right proximal lower "
                          "extremity")], "Proximal DVT right leg", 172),
        "DVT 172 days ago: beyond 90 days, the pathway runs with previous DVT scored (D-08 near miss)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 1, "leg": "right", "criteria": ["previous-dvt"]}})
    add("contralateral-leg-sign", base("pkp-g06-01", onset=10).condition(CALF_PAIN_L, "Left calf pain", 5),
        "Pain behind the RIGHT knee, calf pain coded for the LEFT leg: not a leg sign of the painful side (G-06)",
        patient_view={"cards": [DIFF]})
    add("same-side-leg-sign", base("pkp-g06-02", onset=10).condition(
        [(ICD, "M79.661", "Pain in right lower leg")], "Right calf pain", 5),
        "Same record with the calf pain coded for the RIGHT leg: a leg sign (G-06, G-09)",
        patient_view={"cards": [UNLIKELY, DIFF], "wells": {"score": 0, "leg": "right", "criteria": []}})
    add("old-calf-pain", base("pkp-g09-01", onset=60).condition(CALF_PAIN_R, "Right calf pain", 40),
        "Calf pain from 40 days ago: outside the 4-week leg-sign window (G-09 near miss)",
        patient_view={"cards": [XRAY, DIFF]})

    # --- risk factors without leg signs (D-04) --------------------------------------------------
    add("bmi-30.0", base("pkp-bmi-300", onset=20).observation("39156-5", "Body mass index", 30.0, "kg/m2", 30),
        "BMI 30.0: obesity, a VTE risk factor (R-01 edge; D-04)",
        patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("bmi-29.9", base("pkp-bmi-299", onset=20).observation("39156-5", "Body mass index", 29.94, "kg/m2", 30),
        "BMI 29.94 rounds to 29.9: not obese (R-01 near miss, G-07 rounding)",
        patient_view={"cards": [DIFF]})
    add("bmi-from-pounds-and-inches", base("pkp-bmi-imp", onset=20).observation(
        "29463-7", "Body weight", 200, "[lb_av]", 30).observation("8302-2", "Body height", 68, "[in_i]", 30),
        "No BMI recorded: 200 lb and 68 in give BMI 30.4 (G-07 unit conversion, R-01)",
        patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("long-haul-travel", base("pkp-r04-01", onset=20).finding("long-haul-travel", (11, "h"), 21),
        "An 11-hour flight 3 weeks ago (R-04)", patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("long-haul-travel-old", base("pkp-r04-02", onset=20).finding("long-haul-travel", (11, "h"), 70),
        "The same flight 10 weeks ago: outside 8 weeks (R-04 near miss)", patient_view={"cards": [DIFF]})
    add("oestrogen-pill", base("pkp-r06-01", age=29, onset=20).medication(
        [(RX, "1157348", "ethinyl estradiol / levonorgestrel Oral Product")], "Ethinylestradiol/levonorgestrel"),
        "Combined oral contraceptive (R-06)", patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("oestrogen-pill-stopped", base("pkp-r06-02", age=29, onset=20).medication(
        [(RX, "1157348", "ethinyl estradiol / levonorgestrel Oral Product")], "Ethinylestradiol/levonorgestrel",
        status="stopped"),
        "The pill was stopped (R-06 near miss)", patient_view={"cards": [DIFF]})
    add("thrombophilia", base("pkp-r08-01", onset=20).condition(
        [(ICD, "D68.51", "Activated protein C resistance")], "Factor V Leiden", 3000),
        "Factor V Leiden (R-08)", patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("pe-history-no-leg-signs", base("pkp-r07-01", onset=20).condition(
        [(ICD, "Z86.711", "Personal history of pulmonary embolism")], "History of PE", 900),
        "Previous pulmonary embolism (R-07)", patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("age-60-only", base("pkp-r09-01", age=60, onset=20),
        "Age 60 and nothing else: age alone never triggers a risk card (R-09)", patient_view={"cards": [DIFF]})
    add("risk-escalated", base("pkp-d04-esc", onset=20).condition(BREAST_CANCER, "Breast cancer", 200).condition(
        HISTORY_DVT, "History of DVT", 900),
        "No leg signs, but active cancer and a previous DVT already make 2 Wells points (D-04 escalation)",
        patient_view={"cards": [card("dvt-risk-factors", "warning"), DIFF]})
    add("risk-not-escalated", base("pkp-d04-one", onset=20).condition(BREAST_CANCER, "Breast cancer", 200),
        "Active cancer alone: 1 Wells point, an information card (D-04 escalation near miss)",
        patient_view={"cards": [card("dvt-risk-factors", "info"), DIFF]})
    add("unknown-location-risk", Record("pkp-g05-unk").knee_pain("right", 20, "unknown").condition(
        [(ICD, "D68.51", "Activated protein C resistance")], "Factor V Leiden", 3000),
        "Knee pain with no recorded location and thrombophilia: DVT rules run on the safety gate (G-05)",
        patient_view={"cards": [card("dvt-risk-factors", "info")]})
    add("anterior-location-risk", Record("pkp-g05-ant").knee_pain("right", 20, "anterior").condition(
        [(ICD, "D68.51", "Activated protein C resistance")], "Factor V Leiden", 3000),
        "Anterior knee pain and thrombophilia: outside the service's scope (G-05 near miss)",
        patient_view={"cards": []})

    # --- order hooks: venous duplex (D-06, D-07) ------------------------------------------------
    add("duplex-ordered-wells-0", base("pkp-d07-01", onset=5).draft("duplex"),
        "Venous duplex ordered with Wells 0 and no D-dimer: D-dimer first (D-07)",
        order_select={"cards": [card("dvt-unlikely", "info"), card("imaging-appropriateness", "info")],
                      "wells": {"score": 0, "leg": "right", "criteria": []}},
        order_sign={"cards": [card("dvt-unlikely", "info"), card("imaging-appropriateness", "info")]})
    add("duplex-ordered-wells-0-bakers-cyst",
        base("pkp-d07-02", onset=5).condition(BAKER_R, "Baker's cyst, right", 5).draft("duplex"),
        "Venous duplex ordered with Wells 0 for a suspected Baker's cyst: D-dimer first, and the popliteal-fossa "
        "ultrasound offered for the cyst (D-07 + K-08 [2026-11-26])",
        order_select={"cards": [card("dvt-unlikely", "info"), card("imaging-appropriateness", "info")],
                      "wells": {"score": 0, "leg": "right", "criteria": []}},
        order_sign={"cards": [card("dvt-unlikely", "info"), card("imaging-appropriateness", "info")]})
    add("duplex-ordered-wells-2", base("pkp-d06-01", onset=5).condition(BREAST_CANCER, "Breast cancer", 200)
        .condition(HISTORY_DVT, "History of DVT", 900).draft("duplex"),
        "Venous duplex ordered with Wells 2: the right test, no objection (D-06)",
        order_select={"cards": [card("dvt-likely", "warning")],
                      "wells": {"score": 2, "leg": "right", "criteria": ["active-cancer", "previous-dvt"]}},
        order_sign={"cards": [card("dvt-likely", "warning")]})

    # --- data rules: codes, text, status --------------------------------------------------------
    add("icd-only-chart", Record("pkp-g04-icd").knee_pain("left", 20, coding="icd"),
        "Pain behind the left knee coded with ICD-10-CM only (G-04)", patient_view={"cards": [DIFF]})
    add("snomed-only-chart", Record("pkp-g04-sct").knee_pain("left", 20, coding="snomed"),
        "Pain behind the left knee coded with SNOMED CT only, posterior in bodySite (G-04)",
        patient_view={"cards": [DIFF]})
    add("text-only-chart", Record("pkp-g04-text").condition([], "Pain behind the left knee for three weeks", 20),
        "No codes at all, only text (G-04 text fallback)", patient_view={"cards": [DIFF]})
    add("negated-text-chart", Record("pkp-g04-neg").condition([], "Denies pain behind the knee; no calf swelling", 20),
        "Text that denies the symptom (G-04 near miss)", patient_view={"cards": []})
    add("posterior-tibial-look-alike", Record("pkp-g04-tib").knee_pain(
        "right", 20, "Knee pain; tender over the posterior tibial tendon at the ankle"),
        "'posterior tibial' does not place knee pain behind the knee (G-05 look-alike)",
        patient_view={"cards": []})
    add("knee-pain-entered-in-error", Record("pkp-g01-eie").knee_pain("right", 100, verification="entered-in-error"),
        "The only knee pain entry was entered in error (G-01)", patient_view={"cards": []})
    add("knee-pain-no-status", Record("pkp-g01-nostatus").knee_pain("right", 20),
        "Problem-list entry without clinicalStatus counts as active (G-01)", patient_view={"cards": [DIFF]})

    # --- location differential (L-01..L-06) -----------------------------------------------------
    for rule, name, text, site in (
        ("L-01", "medial", "Pain behind the right knee, inner side", {"coding": [
            {"system": SN, "code": "255551008", "display": "Posterior"},
            {"system": SN, "code": "255561001", "display": "Medial"}], "text": "back of the knee, medial"}),
        ("L-02", "lateral", "Pain behind the right knee on the outer side", None),
        ("L-03", "central-swelling", "Fullness and swelling in the popliteal fossa, right", None),
        ("L-04", "above-after-sprint", "Pain just above the back of the right knee after sprinting", None),
        ("L-05", "below-into-calf", "Pain behind the right knee running below into the calf", None),
    ):
        add(f"location-{name}", Record(f"pkp-{rule.lower()}").knee_pain("right", 20, "posterior", text=text,
                                                                       **({"site": site} if site else {})),
            f"Pain behind the knee, {name} ({rule})",
            patient_view={"cards": [card("imaging", "info"), DIFF] if rule == "L-03" else [DIFF]})
    add("location-with-back-pain", Record("pkp-l-06").knee_pain("right", 20).condition(
        [(ICD, "M54.50", "Low back pain, unspecified")], "Low back pain", 20),
        "Pain behind the knee with low back pain (L-06)", patient_view={"cards": [DIFF]})
    s["knee-pain-no-status"][0].resources[1].pop("clinicalStatus")
    return s


# rule -> (hook, trigger, nearest miss, token the trigger shows and the miss does not, absent?)
RULE_CHECKS: list[tuple[str, str, str, str, str, bool]] = [
    ("G-01", "patient-view", "knee-pain-no-status", "knee-pain-entered-in-error", "differential", False),
    ("G-02", "patient-view", "wells-resolved-dvt", "wells-dvt-entered-in-error", "previous-dvt", False),
    ("G-03", "patient-view", "dvt-surgery-84-days", "dvt-surgery-92-days", "bedridden-or-major-surgery", False),
    ("G-04", "patient-view", "text-only-chart", "negated-text-chart", "differential", False),
    ("G-05", "patient-view", "unknown-location-risk", "anterior-location-risk", "D-04", False),
    ("G-06", "patient-view", "same-side-leg-sign", "contralateral-leg-sign", "dvt-unlikely", False),
    ("G-07", "patient-view", "bmi-30.0", "bmi-29.9", "R-01", False),
    ("G-08", "patient-view", "chronic-pain-xray-other-knee", "chronic-pain-xray-on-record", "K-05", False),
    ("G-08", "patient-view", "chronic-pain-xray-result-observation", "chronic-posterior-knee-pain", "K-06", False),
    ("G-09", "patient-view", "same-side-leg-sign", "old-calf-pain", "dvt-unlikely", False),
    ("W-01", "patient-view", "wells-merkel-cell-cancer", "wells-cancer-history-only", "active-cancer", False),
    ("W-01", "patient-view", "wells-chemotherapy-encounter", "wells-chemotherapy-encounter-old", "active-cancer", False),
    ("W-02", "patient-view", "wells-paraplegia", "dvt-unlikely-calf-pain", "paralysis-or-immobilisation", False),
    ("W-03", "patient-view", "dvt-surgery-84-days", "dvt-surgery-92-days", "bedridden-or-major-surgery", False),
    ("W-03", "patient-view", "dvt-knee-arthroscopy-10-days", "dvt-knee-injection-10-days",
     "bedridden-or-major-surgery", False),
    ("W-04", "patient-view", "wells-deep-vein-tenderness", "wells-deep-vein-tenderness-absent",
     "deep-vein-tenderness", False),
    ("W-05", "patient-view", "wells-entire-leg-swollen", "wells-entire-leg-swollen-absent", "entire-leg-swollen",
     False),
    ("W-06", "patient-view", "dvt-likely-calf-3.0cm", "dvt-calf-2.9cm", "calf-swelling-3cm", False),
    ("W-07", "patient-view", "wells-pitting-oedema-symptomatic-leg", "wells-pitting-oedema-symptomatic-leg-absent",
     "pitting-oedema", False),
    ("W-08", "patient-view", "wells-collateral-superficial-veins", "wells-collateral-superficial-veins-absent",
     "collateral-superficial-veins", False),
    ("W-09", "patient-view", "wells-resolved-dvt", "wells-pe-history-only", "previous-dvt", False),
    ("W-10", "patient-view", "wells-alternative-diagnosis", "calf-strain-with-calf-pain", "alternative-diagnosis",
     False),
    ("W-11", "patient-view", "dvt-likely-calf-3.0cm", "dvt-calf-2.9cm", "dvt-likely", False),
    ("W-12", "patient-view", "age-18-leg-signs", "under-18-leg-signs", "org.example.kneecds.wells", False),
    ("D-01", "patient-view", "dvt-urgent-hot-calf", "dvt-warm-calf-no-swelling", "dvt-urgent", False),
    ("D-02", "patient-view", "dvt-likely-calf-3.0cm", "dvt-calf-2.9cm", "D-02", False),
    ("D-03", "patient-view", "dvt-unlikely-calf-pain", "old-calf-pain", "D-03", False),
    ("D-03", "patient-view", "dvt-unlikely-positive-d-dimer", "dvt-unlikely-calf-pain", "order:39443-7", False),
    ("D-03", "patient-view", "dvt-unlikely-calf-pain", "dvt-unlikely-negative-d-dimer", "order:48065-7", False),
    ("D-04", "patient-view", "thrombophilia", "age-60-only", "D-04", False),
    ("D-05", "patient-view", "calf-strain-with-calf-pain", "dvt-unlikely-calf-pain", "D-05", False),
    ("D-06", "order-select", "duplex-ordered-wells-2", "duplex-ordered-wells-0", "D-06", False),
    ("D-07", "order-select", "duplex-ordered-wells-0", "duplex-ordered-wells-2", "D-07", False),
    ("D-07", "order-select", "duplex-ordered-wells-0-bakers-cyst", "duplex-ordered-wells-0", "order:76882", False),
    ("D-08", "patient-view", "known-recent-dvt", "old-dvt", "D-08", False),
    ("D-09", "patient-view", "under-18-leg-signs", "age-18-leg-signs", "D-09", False),
    ("D-10", "patient-view", "dvt-likely-negative-scan", "dvt-likely-negative-scan-9-days-ago", "D-10", False),
    ("D-10", "patient-view", "dvt-likely-negative-scan-positive-d-dimer", "dvt-likely-negative-scan", "order:39443-7",
     False),
    ("G-10", "patient-view", "dvt-urgent-exam-note", "exam-note-negated", "dvt-urgent", False),
    ("G-11", "patient-view", "calf-warmth-period-ended-10-days-ago", "calf-warmth-period-ended-16-days-ago",
     "dvt-urgent", False),
    ("R-01", "patient-view", "bmi-from-pounds-and-inches", "bmi-29.9", "R-01", False),
    ("R-02", "patient-view", "risk-not-escalated", "age-60-only", "R-02", False),
    ("R-03", "patient-view", "dvt-surgery-84-days", "dvt-surgery-92-days", "R-03", False),
    ("R-04", "patient-view", "long-haul-travel", "long-haul-travel-old", "R-04", False),
    ("R-05", "patient-view", "postpartum-9-weeks-leg-signs", "age-18-leg-signs", "R-05", False),
    ("R-06", "patient-view", "oestrogen-pill", "oestrogen-pill-stopped", "R-06", False),
    ("R-07", "patient-view", "pe-history-no-leg-signs", "age-60-only", "R-07", False),
    ("R-08", "patient-view", "thrombophilia", "age-60-only", "R-08", False),
    ("R-09", "patient-view", "age-60-only", "thrombophilia", "dvt-risk-factors", True),
    ("P-01", "patient-view", "pregnant-leg-signs", "stale-pregnancy-leg-signs", "P-01", False),
    ("P-01", "patient-view", "pregnant-left-calf-pain", "contralateral-leg-sign", "P-01", False),
    ("P-02", "patient-view", "postpartum-leg-signs", "postpartum-9-weeks-leg-signs", "P-02", False),
    ("RF-01", "patient-view", "dvt-urgent-hot-calf", "dvt-warm-calf-no-swelling", "RF-01", False),
    ("RF-02", "patient-view", "severe-pain-after-injury", "moderate-pain-after-injury", "RF-02", False),
    ("RF-03", "patient-view", "locked-knee", "not-locked-knee", "RF-03", False),
    ("RF-04", "patient-view", "giving-way", "giving-way-resolved", "RF-04", False),
    ("RF-05", "patient-view", "knee-dislocation", "knee-dislocation-refuted", "RF-05", False),
    ("RF-06", "patient-view", "hot-knee-with-fever", "knee-effusion-no-fever", "RF-06", False),
    ("RF-07", "patient-view", "compartment-syndrome", "compartment-syndrome-arm", "RF-07", False),
    ("K-01", "patient-view", "injury-age-55", "injury-age-54", "K-01", False),
    ("K-02", "patient-view", "injury-fall-age-51", "injury-twist-age-51", "K-02", False),
    ("K-03", "order-select", "injury-age-54", "injury-fibular-tenderness", "K-03", False),
    ("K-04", "patient-view", "injury-suspected-meniscal-tear", "injury-tear-cannot-bear-weight", "K-04", False),
    ("K-05", "patient-view", "pain-6-weeks", "pain-5-weeks", "K-05", False),
    ("K-06", "patient-view", "chronic-pain-normal-xray", "chronic-pain-xray-on-record", "K-06", False),
    ("K-07", "order-select", "chronic-posterior-knee-pain", "chronic-pain-xray-on-record", "K-07", False),
    ("K-08", "patient-view", "bakers-cyst-with-calf-swelling", "bakers-cyst-wells-likely", "K-08", False),
    ("K-09", "patient-view", "young-meniscal-tear-after-injury", "chronic-posterior-knee-pain", "K-09", False),
    ("K-10", "patient-view", "normal-knee-mri", "abnormal-knee-mri", "K-10", False),
    ("K-11", "patient-view", "hamstring-avulsion-suspected", "hamstring-strain", "K-11", False),
    ("K-12", "patient-view", "tendinopathy", "pain-5-weeks", "differential", True),
    ("K-13", "patient-view", "popliteal-aneurysm", "popliteal-mass-not-pulsatile", "K-13", False),
    ("K-14", "patient-view", "pain-6-weeks", "pain-5-weeks", "K-14", False),
    ("N-01", "patient-view", "sciatica", "sciatica-resolved", "N-01", False),
    ("L-01", "patient-view", "location-medial", "knee-pain-no-status", "L-01", False),
    ("L-02", "patient-view", "location-lateral", "knee-pain-no-status", "L-02", False),
    ("L-03", "patient-view", "location-central-swelling", "knee-pain-no-status", "L-03", False),
    ("L-04", "patient-view", "location-above-after-sprint", "knee-pain-no-status", "L-04", False),
    ("L-05", "patient-view", "location-below-into-calf", "knee-pain-no-status", "L-05", False),
    ("L-06", "patient-view", "location-with-back-pain", "knee-pain-no-status", "L-06", False),
    ("L-07", "patient-view", "knee-pain-no-status", "location-medial", "L-07", False),
]


# Ready-made CDS Hooks request bodies for curl (fhir_examples/requests/), built from these bundles.
REQUESTS = (("chronic-posterior-knee-pain", "patient-view"), ("chronic-posterior-knee-pain", "order-select"),
            ("chronic-posterior-knee-pain", "order-sign"), ("dvt-urgent-hot-calf", "patient-view"),
            ("duplex-ordered-wells-0", "order-sign"))


def render() -> dict[str, str]:
    sys.path.insert(0, str(HERE.parent))
    from cds_service.samples import build_request  # the same builder the CLI's `request` command uses

    files: dict[str, str] = {}
    manifest: dict[str, Any] = {"reference_date": TODAY.isoformat(), "examples": {}, "rule_checks": []}
    for name, (record, expect, description) in scenarios().items():
        files[f"{name}.json"] = json.dumps(record.bundle(), indent=2) + "\n"
        manifest["examples"][f"{name}.json"] = {"today": TODAY.isoformat(), "description": description,
                                                "expect": expect}
    for rule, hook, trigger, miss, token, absent in RULE_CHECKS:
        manifest["rule_checks"].append({"rule": rule, "hook": hook, "trigger": f"{trigger}.json",
                                        "near_miss": f"{miss}.json", "look_for": token, "absent": absent})
    files["manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    built = scenarios()
    for name, hook in REQUESTS:
        instance = str(uuid.uuid5(uuid.NAMESPACE_URL, f"knee-cds/{name}/{hook}"))
        body = build_request(built[name][0].resources, hook, hook_instance=instance)
        files[f"requests/{name}.{hook}.json"] = json.dumps(body, indent=2) + "\n"
    return files


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (HERE / n).is_file() or (HERE / n).read_text() != text]
        extra = [str(p.relative_to(HERE)) for p in [*HERE.glob("*.json"), *HERE.glob("requests/*.json")]
                 if str(p.relative_to(HERE)) not in files]
        for name in stale + extra:
            print(f"out of date: fhir_examples/{name}")
        return 1 if stale or extra else 0
    for old in [*HERE.glob("*.json"), *HERE.glob("requests/*.json")]:
        if str(old.relative_to(HERE)) not in files:
            old.unlink()
    (HERE / "requests").mkdir(exist_ok=True)
    for name, text in files.items():
        (HERE / name).write_text(text)
    print(f"wrote {len(files)} files: bundles, manifest.json and requests/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
