"""`make mutate`: apply each named mutation of tools/mutations.py to a scratch copy of the repository, run its fast
tests, and report killed / survived per mutation and a score.

    .venv/bin/python -m tools.mutate              # every mutation
    .venv/bin/python -m tools.mutate d08 calf     # those whose name contains one of these words
    .venv/bin/python -m tools.mutate --list

The working tree is never edited: the repository is copied to a temporary directory once, and each mutation is
written there and undone after its run. Before any mutation runs, every snippet must be found exactly once and every
selection of tests must pass (and select something) on the unmutated copy; otherwise the run stops, loudly.
Exit status: 0 when every mutation is killed, 1 when one survives, 2 when the list or the baseline is broken.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tools.mutations import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = shutil.ignore_patterns(".venv", ".git", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache",
                                 ".hypothesis", "instance", "dist", "*.pyc")
RUN_SECONDS = 300
PYTEST_EXIT_FAILED = 1
PYTEST_EXIT_NO_TESTS = 5


def cannot_start(problems: list[str]) -> NoReturn:
    """A snippet no longer matches, or a selection fails or selects nothing before any mutation: stop, loudly."""
    print("make mutate cannot start:", *problems, sep="\n  ", file=sys.stderr)
    raise SystemExit(2)


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    verdict: str  # killed | survived | error
    seconds: float
    output: str = ""


def scratch_copy(into: Path) -> Path:
    """The repository copied under ``into``, beside a link to ../shared when the tests read it from there."""
    copy = into / ROOT.name
    shutil.copytree(ROOT, copy, ignore=SKIPPED, symlinks=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (into / "shared").symlink_to(shared, target_is_directory=True)
    return copy


def pytest(copy: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    # The copy's package comes first on the path, and no bytecode is written: a mutated and a restored file of the
    # same size, written within one second, would otherwise share a stale .pyc.
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # a skipped test is no kill either way; CI's "fail instead of skip" is not this tool's
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    return subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=RUN_SECONDS)


def check_snippets(copy: Path, mutations: list[Mutation]) -> None:
    problems = []
    for m in mutations:
        path = copy / m.file
        count = path.read_text(encoding="utf-8").count(m.snippet) if path.is_file() else 0
        if count != 1:
            where = "file not found" if not path.is_file() else f"found {count} times"
            problems.append(f"{m.name}: {m.file}: {m.snippet!r} {where} (must be exactly once)")
        if m.snippet == m.replacement:
            problems.append(f"{m.name}: the replacement is the snippet itself")
    if problems:
        cannot_start(problems)


def check_baseline(copy: Path, mutations: list[Mutation]) -> None:
    probe = subprocess.run([sys.executable, "-c", "import cds_service; print(cds_service.__file__)"], cwd=copy,
                           env={**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"},
                           capture_output=True, text=True)
    if not probe.stdout.strip().startswith(str(copy)):
        cannot_start([f"the scratch copy's cds_service is not the one imported: {probe.stdout}{probe.stderr}"])
    problems = []
    for tests in dict.fromkeys(m.tests for m in mutations):
        run = pytest(copy, tests)
        if run.returncode != 0:
            verdict = "selects no test" if run.returncode == PYTEST_EXIT_NO_TESTS else "fails unmutated"
            problems.append(f"{' '.join(tests)}: {verdict}\n{tail(run.stdout + run.stderr)}")
    if problems:
        cannot_start(problems)


def run_mutation(copy: Path, m: Mutation) -> Outcome:
    path = copy / m.file
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(m.snippet, m.replacement, 1), encoding="utf-8")
    started = time.monotonic()
    try:
        run = pytest(copy, m.tests)
    except subprocess.TimeoutExpired:
        return Outcome(m, "killed", time.monotonic() - started, "timed out")  # a hang is noticed too
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.monotonic() - started
    if run.returncode == 0:
        return Outcome(m, "survived", seconds)
    if run.returncode == PYTEST_EXIT_FAILED:
        return Outcome(m, "killed", seconds)
    # Interrupted, a collection error, no test selected: not a kill by the tests that were meant to notice.
    return Outcome(m, "error", seconds, tail(run.stdout + run.stderr))


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or any(n in m.name for n in args.names)]
    if args.list or not chosen:
        for m in chosen or MUTATIONS:
            print(f"{m.name:34} {m.file:32} {m.snippet!r} -> {m.replacement!r}")
        return 0 if chosen else 2
    with tempfile.TemporaryDirectory(prefix="knee-cds-mutate-") as tmp:
        copy = scratch_copy(Path(tmp))
        check_snippets(copy, chosen)
        check_baseline(copy, chosen)
        outcomes = []
        for m in chosen:
            outcome = run_mutation(copy, m)
            outcomes.append(outcome)
            print(f"{outcome.verdict:9} {m.name:34} {m.file:32} {outcome.seconds:5.1f}s  [{' '.join(m.tests)}]",
                  flush=True)
            if outcome.output:
                print("    " + outcome.output.replace("\n", "\n    "))
    killed = sum(o.verdict == "killed" for o in outcomes)
    print(f"\nscore: {killed}/{len(outcomes)} mutations killed ({100 * killed // len(outcomes)}%)")
    for o in outcomes:
        if o.verdict != "killed":
            print(f"  {o.verdict}: {o.mutation.name} ({o.mutation.file}: {o.mutation.snippet!r})")
    if any(o.verdict == "error" for o in outcomes):
        return 2
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
