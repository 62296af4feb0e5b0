"""Cloud Build never deploys past tests it skipped: the emulator tests run, and must, before the
apply; `make test` lints. And with CHIMERA_REQUIRE_EMULATORS=1 a missing emulator fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = "CHIMERA_REQUIRE_EMULATORS=1"


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is a dev dependency: pip install -e .[dev]")
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def _resolved(build: dict[str, Any], text: str) -> str:
    """`text` with the build's own substitutions (${_NAME}) filled in, as Cloud Build does."""
    subs = build.get("substitutions", {})
    return re.sub(r"\$\{(_[A-Z0-9_]+)\}", lambda m: str(subs.get(m[1], m[0])), text)


def _script(step: dict[str, Any]) -> str:
    return " ".join([step.get("entrypoint", ""), *map(str, step.get("args", []))])


def _after(build: dict[str, Any], step_id: str) -> set[str]:
    """Every step that has finished before `step_id` starts: by default a step waits for all
    the steps above it; `waitFor` names the ones it waits for instead (`-`: none)."""
    steps = build["steps"]
    ids = [s.get("id", f"#{i}") for i, s in enumerate(steps)]
    index = ids.index(step_id)
    wait = steps[index].get("waitFor")
    direct = set(ids[:index]) if wait is None else {w for w in wait if w != "-"}
    return direct | {earlier for d in direct for earlier in _after(build, d)}


def _emulator_step(build: dict[str, Any]) -> dict[str, Any]:
    steps = [s for s in build["steps"] if REQUIRE in s.get("env", [])]
    assert len(steps) == 1, f"one step sets {REQUIRE}"
    return steps[0]


def _deploying(build: dict[str, Any]) -> list[str]:
    """The steps that change the cloud: Terraform's apply, and whatever runs after it."""
    ids = [s["id"] for s in build["steps"]]
    applies = [s["id"] for s in build["steps"] if re.search(r"terraform\b.*\bapply\b", _script(s))]
    assert applies, "no step applies Terraform"
    return ids[ids.index(applies[0]) :]


def _make_recipe(target: str) -> tuple[list[str], str]:
    """(prerequisites, recipe) of a Makefile target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:(.*)\n((?:\t.*\n?)*)", text, re.M)
    assert match, f"the Makefile has no {target} target"
    return match[1].split(), match[2]


def test_emulator_tests_run_before_anything_is_deployed(build):
    emulators = _emulator_step(build)["id"]
    for step in _deploying(build):
        assert emulators in _after(build, step), f"{step} may start before {emulators} passed"


def test_emulator_step_runs_the_emulator_tests_with_missing_ones_failing(build):
    step = _emulator_step(build)
    script = _script(step)
    if re.search(r"\bmake test-emulators\b", script):
        _, script = _make_recipe("test-emulators")
    assert re.search(r"pytest\b.*-m emulator\b", script), "the step runs `pytest -m emulator`"


def test_emulator_step_provides_python_java_gcloud_and_both_emulators(build):
    step = _emulator_step(build)
    image, script = _resolved(build, step["name"]), _resolved(build, _script(step))
    assert re.fullmatch(r"python:3\.11-bookworm", image), image
    lines = script.replace("\\\n", " ")  # the shell's continued lines, joined
    installed = " ".join(re.findall(r"apt-get install ([^\n]*)", lines))
    for package in (
        r"openjdk-\d+-jre-headless",
        r"google-cloud-cli=[\d.]+-0",
        r"google-cloud-cli-firestore-emulator=[\d.]+-0",
        r"google-cloud-cli-pubsub-emulator=[\d.]+-0",
    ):
        assert re.search(package, installed), f"the step does not install {package}"
    # The Firestore and Pub/Sub emulators come from Google's apt repository, and run on Java.
    assert "packages.cloud.google.com/apt cloud-sdk main" in script
    assert "java -version" in script and "gcloud --version" in script


def test_the_lint_and_test_step_runs_make_test_which_lints_first(build):
    (step,) = [s for s in build["steps"] if s["id"] == "lint-and-test"]
    assert re.search(r"\bmake test\b", _script(step))
    # The emulator step runs in the .venv this step made (the workspace is kept between steps).
    assert "lint-and-test" in _after(build, _emulator_step(build)["id"])
    prerequisites, _ = _make_recipe("test")
    assert "lint" in prerequisites
    _, lint = _make_recipe("lint")
    assert "ruff check ." in lint and "ruff format --check ." in lint and "mypy" in lint


def test_waitfor_is_followed_when_a_step_starts_early():
    build = {
        "steps": [
            {"id": "a"},
            {"id": "b", "waitFor": ["-"]},
            {"id": "c", "waitFor": ["b"]},
            {"id": "d"},
        ]
    }
    assert _after(build, "c") == {"b"}
    assert _after(build, "b") == set()
    assert _after(build, "d") == {"a", "b", "c"}


# --- A missing emulator: skipped here, a failure where emulators are required ----------------

NEEDS_FIRESTORE = """
    from tests.emulators import emulator

    def test_needs_the_firestore_emulator():
        emulator("firestore")
"""


def _run_without_gcloud(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on a test that asks for the Firestore emulator, on a PATH with no gcloud."""
    (tmp_path / "test_needs_firestore.py").write_text(textwrap.dedent(NEEDS_FIRESTORE))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.emulators", "-p", "no:cacheprovider"]
        + ["-rsf", "-q", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": str(empty), "PYTHONPATH": os.pathsep.join(sys.path), "HOME": str(tmp_path)}
        | env,
    )


def test_a_missing_emulator_fails_the_test_when_emulators_are_required(tmp_path):
    done = _run_without_gcloud(tmp_path, CHIMERA_REQUIRE_EMULATORS="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout
    assert "gcloud (the Google Cloud CLI) is not installed" in done.stdout
    assert REQUIRE in done.stdout


def test_a_missing_emulator_skips_the_test_with_its_reason_when_not_required(tmp_path):
    done = _run_without_gcloud(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert "gcloud (the Google Cloud CLI) is not installed" in done.stdout
