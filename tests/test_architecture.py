"""The data flow is the architecture: the import graph proves it, and knowledge stays data (a new red flag is a row)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

from cds_service import Settings, create_app
from cds_service.knowledge import locate_cards_dir

from .conftest import ROOT, example_request

PACKAGE = ROOT / "cds_service"
HTTP_LAYER = {"cds_service.http", "cds_service.hooks", "cds_service.discovery", "cds_service.feedback",
              "cds_service.ops", "cds_service.preview"}  # blueprints (the last two: operations and development pages)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth of its code, function-level imports included)."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                # `from . import rules` imports the module rules, not the package's own code
                candidates = submodules if submodules and not node.module else [target, *submodules]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules}
        graph[name] = found - {name}
    return graph


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_import_graph_has_no_cycle():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state and module != "cds_service":
            visit(module, [module])


def test_rules_import_facts_and_facts_never_import_rules_or_cards():
    graph = _imports()
    facts = {m for m in graph if _in(m, "cds_service.facts")}
    rules = {m for m in graph if _in(m, "cds_service.rules")}
    assert any(_in(t, "cds_service.facts") for m in rules for t in graph[m])
    for module in facts:
        wrong = {t for t in graph[module] if _in(t, "cds_service.rules") or t == "cds_service.cards"}
        assert not wrong, (module, wrong)


def test_nothing_but_the_app_factory_imports_the_http_layer():
    graph = _imports()
    for module, targets in graph.items():
        if module == "cds_service" or module in HTTP_LAYER:
            continue
        assert not targets & HTTP_LAYER, (module, targets & HTTP_LAYER)


def test_a_new_red_flag_is_a_value_set_and_a_table_row(tmp_path):
    cards = tmp_path / "cards"
    shutil.copytree(locate_cards_dir(), cards)
    value_sets = json.loads((cards / "valuesets.json").read_text())
    value_sets["hard-popliteal-mass"] = {"description": "A hard mass behind the knee (test)", "include": [],
                                         "text": ["hard (popliteal )?mass"]}
    (cards / "valuesets.json").write_text(json.dumps(value_sets))
    with (cards / "cards.toml").open("a") as toml:
        toml.write('\n[[red_flags]]\nid = "RF-08"\nname = "Hard mass behind the knee"\nindicator = "warning"\n'
                   'gate = "knee"\nwhen = [["condition:hard-popliteal-mass"]]\n'
                   'action = "- Hard mass: radiograph, then MRI or urgent referral."\n'
                   'urgency = "knee radiograph, then MRI or urgent referral"\nsource = "RF-KNEE"\n')
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", now="2026-11-20", cards_dir=str(cards)))
    body = example_request("chronic-posterior-knee-pain.json", "patient-view")

    def flags(extra_conditions: list[dict]) -> list[str]:
        request = json.loads(json.dumps(body))
        request["prefetch"]["conditions"]["entry"] += [{"resource": c} for c in extra_conditions]
        cards_shown = app.test_client().post("/cds-services/posterior-knee-pain", json=request).get_json()["cards"]
        return [c["summary"] + "\n" + c["detail"] + json.dumps(c["extension"]) for c in cards_shown
                if c["source"]["topic"]["code"] == "red-flag"]

    mass = {"resourceType": "Condition", "id": "mass-1", "subject": {"reference": "Patient/pkp-chronic-01"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"text": "Hard mass behind the right knee"}, "onsetDateTime": "2026-11-10"}
    shown = flags([mass])
    assert len(shown) == 1 and "RF-08" in shown[0]
    assert shown[0].startswith("Hard mass behind the knee: knee radiograph, then MRI or urgent referral\n")
    assert flags([{**mass, "code": {"text": "Soft swelling behind the right knee"}}]) == []
