"""Static checks on terraform/: format, least privilege, timeouts, queues, secrets, bundles."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections import defaultdict
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.logs import CloudLoggingFormatter
from shared.queues import QUEUES
from shared.settings import Settings, variable
from shared.vendor_urls import VENDOR_ENDPOINTS, VERTEX_AI_URL

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is a dev dependency: pip install -e .[dev]")

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
TOOLS = ("clearbit", "jira", "sendgrid", "slack")
ENTRY_POINTS = {
    "orchestrator": "handle_task",
    "orchestrator-intake": "intake_http",
    "orchestrator-pubsub": "intake_pubsub",
    **{f"tool-{tool}": "run_tool" for tool in TOOLS},
}
# Which function may read which secret (by environment variable), and nothing else.
SECRET_READERS = {
    "CHIMERA_CLEARBIT_KEY": {"tool-clearbit"},
    "CHIMERA_JIRA_TOKEN": {"tool-jira"},
    "CHIMERA_SENDGRID_KEY": {"tool-sendgrid"},
    "CHIMERA_SLACK_TOKEN": {"tool-slack"},
    "CHIMERA_GEMINI_API_KEY": {"orchestrator", "tool-sendgrid"},
}
EVERY_FUNCTION_ENV = {
    "CHIMERA_BACKEND",
    "CHIMERA_STATE_URL",
    "CHIMERA_GCP_PROJECT",
    "CHIMERA_GCP_LOCATION",
    "CHIMERA_FUNCTIONS_URL",
    "CHIMERA_TASKS_SERVICE_ACCOUNT",
    "CHIMERA_LOG_FORMAT",
    "CHIMERA_TELEMETRY_EXPORTER",
    "CHIMERA_VENDOR_CONNECT_TIMEOUT",
    "CHIMERA_VENDOR_READ_TIMEOUT",
    "CHIMERA_DISPATCH_DEADLINE",
    "CHIMERA_FUNCTION_TIMEOUT",
    "CHIMERA_CLEARBIT_URL",
    "CHIMERA_JIRA_URL",
    "CHIMERA_SENDGRID_URL",
    "CHIMERA_SLACK_URL",
    "CHIMERA_GEMINI_URL",
    "CHIMERA_ENRICHMENT_PROVIDERS",
    "CHIMERA_GEMINI_VERTEXAI",
    "CHIMERA_GEMINI_LOCATION",
}


# --- Reading the configuration --------------------------------------------------------------
# python-hcl2 4.x gives bare strings; 7.x+ keeps HCL's quotes and marks blocks. Normalise both.


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        # Drop the parser's own markers (__is_block__, __comments__).
        return {_unquote(k): _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


@cache
def _config() -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = defaultdict(list)
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            parsed = _clean(hcl2.load(handle))
        for kind, items in parsed.items():
            merged[kind].extend(items)
    return dict(merged)


def _variables() -> dict[str, dict[str, Any]]:
    return {name: body for item in _config()["variable"] for name, body in item.items()}


def _locals() -> dict[str, Any]:
    return {k: v for block in _config()["locals"] for k, v in block.items()}


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in _config()["resource"]:
        for name, body in item.get(kind, {}).items():
            found[name] = body
    return found


def _all_resources() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (kind, name, body)
        for item in _config()["resource"]
        for kind, named in item.items()
        for name, body in named.items()
    ]


def _default(reference: Any) -> Any:
    """The default of `${var.x}`; any other value as it is."""
    match = re.fullmatch(r"\$\{var\.(\w+)\}", reference) if isinstance(reference, str) else None
    return _variables()[match[1]]["default"] if match else reference


def _functions() -> dict[str, dict[str, Any]]:
    return _locals()["functions"]


def _build_bundles() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_bundles", TERRAFORM / "build_bundles.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# --- Format and scanners ----------------------------------------------------------------------


def test_terraform_is_formatted_when_terraform_is_installed() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH: `terraform fmt -check` not run")
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"run `terraform fmt -recursive terraform/`:\n{done.stdout}"


@pytest.mark.timeout(900)  # the first run installs Checkov into .venv-checkov
def test_checkov_passes_when_enabled() -> None:
    wanted = os.environ.get("RUN_CHECKOV") == "1"
    if not wanted and not (REPO / ".venv-checkov" / "bin" / "checkov").exists():
        pytest.skip("Checkov not installed: set RUN_CHECKOV=1 or run scripts/checkov.sh")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "checkov.sh")],
        capture_output=True,
        text=True,
        timeout=880,
        cwd=REPO,
    )
    assert done.returncode == 0, f"Checkov failed:\n{done.stdout}\n{done.stderr}"


# --- Identities and access --------------------------------------------------------------------


def test_every_function_has_its_own_service_account() -> None:
    functions = _functions()
    assert {name: f["entry_point"] for name, f in functions.items()} == ENTRY_POINTS

    accounts = _resources("google_service_account")
    assert accounts["function"]["for_each"] == "${local.functions}"
    assert "${each.key}" in accounts["function"]["account_id"]
    for name in functions:
        account_id = accounts["function"]["account_id"].replace("${each.key}", name)
        assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account_id), account_id

    deployed = _resources("google_cloudfunctions2_function")
    assert list(deployed) == ["function"], "every function is one instance of one resource"
    function = deployed["function"]
    assert function["for_each"] == "${local.functions}"
    service = function["service_config"][0]
    assert service["service_account_email"] == "${google_service_account.function[each.key].email}"


def test_nothing_is_public_in_any_terraform_file() -> None:
    files = [*TERRAFORM.rglob("*.tf"), *TERRAFORM.glob("*.tfvars*")]
    files = [f for f in files if ".terraform" not in f.parts]
    assert files
    for path in files:
        text = path.read_text().lower()
        for member in ("allusers", "allauthenticatedusers"):
            assert member not in text, f"{path.name} names {member}"


def test_only_the_tasks_account_invokes_the_orchestrator_and_the_tools() -> None:
    functions = _functions()
    task_targets = {name for name, f in functions.items() if f["invoked_by"] == "tasks"}
    assert task_targets == {"orchestrator", *(f"tool-{t}" for t in TOOLS)}
    assert functions["orchestrator-intake"]["invoked_by"] == "intake"
    assert functions["orchestrator-pubsub"]["invoked_by"] == "eventarc"

    invokers = {
        name: body
        for kind, name, body in _all_resources()
        if str(body.get("role", "")) in ("roles/run.invoker", "roles/cloudfunctions.invoker")
    }
    assert set(invokers) == {"tasks_invoker", "intake_invoker", "trigger_invoker"}
    assert invokers["tasks_invoker"]["member"] == "${google_service_account.tasks.member}"
    assert 'f.invoked_by == "tasks"' in invokers["tasks_invoker"]["for_each"]
    assert invokers["intake_invoker"]["for_each"] == "${toset(var.intake_invokers)}"
    assert '"orchestrator-intake"' in invokers["intake_invoker"]["name"]
    assert (
        invokers["trigger_invoker"]["member"] == "${google_service_account.intake_trigger.member}"
    )
    # No binding outside these: no project-wide invoker, no function-level IAM resources.
    assert not [
        k for k, _, _ in _all_resources() if k.startswith("google_cloudfunctions2_function_iam")
    ]


def test_enqueuers_get_their_queues_and_act_as_the_tasks_account() -> None:
    functions = _functions()
    for name, f in functions.items():
        assert set(f["enqueues_to"]) <= set(QUEUES), name
    assert set(functions["orchestrator"]["enqueues_to"]) == set(QUEUES)
    for name in ("orchestrator-intake", "orchestrator-pubsub", *(f"tool-{t}" for t in TOOLS)):
        assert functions[name]["enqueues_to"] == ["orchestrator"], name

    enqueuer = _resources("google_cloud_tasks_queue_iam_member")["enqueuer"]
    assert enqueuer["role"] == "roles/cloudtasks.enqueuer"
    act_as = _resources("google_service_account_iam_member")["tasks_act_as"]
    assert act_as["role"] == "roles/iam.serviceAccountUser"
    assert act_as["service_account_id"] == "${google_service_account.tasks.name}"
    datastore = _resources("google_project_iam_member")["datastore_user"]
    assert datastore["role"] == "roles/datastore.user"
    assert "databases/${var.firestore_database}" in datastore["condition"][0]["expression"]


def test_each_tool_reads_only_its_own_secrets() -> None:
    secrets = _locals()["secrets"]
    readers = {s["env"]: set(s["readers"]) for s in secrets.values()}
    assert readers == SECRET_READERS

    binding = _resources("google_secret_manager_secret_iam_member")["reader"]
    assert binding["for_each"] == "${local.secret_reads}"
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["member"] == "${google_service_account.function[each.value.function].member}"
    # A function gets as environment only the secrets it reads.
    function = _resources("google_cloudfunctions2_function")["function"]
    dynamic = function["service_config"][0]["dynamic"]
    (secret_env,) = [d["secret_environment_variables"] for d in dynamic]
    assert "read.function == each.key" in secret_env["for_each"]
    # Never at project level, where every secret would be readable.
    for kind, name, body in _all_resources():
        if kind.startswith("google_project_iam"):
            assert "secretmanager" not in str(body.get("role", "")), name
    assert not _resources("google_secret_manager_secret_version"), "secret values stay out of band"


# --- Least privilege: the exact roles of every service account --------------------------------

FUNCTION_MEMBERS = (
    "${google_service_account.function[each.key].member}",
    "${google_service_account.function[each.value.function].member}",
)
# Every IAM grant the configuration makes: a new one fails the tests below until it is pinned.
GRANTS = {
    ("google_cloud_run_v2_service_iam_member", "tasks_invoker"),
    ("google_cloud_run_v2_service_iam_member", "intake_invoker"),
    ("google_cloud_run_v2_service_iam_member", "trigger_invoker"),
    ("google_cloud_tasks_queue_iam_member", "enqueuer"),
    ("google_service_account_iam_member", "tasks_act_as"),
    ("google_project_iam_member", "datastore_user"),
    ("google_project_iam_member", "vertex_user"),
    ("google_secret_manager_secret_iam_member", "reader"),
    ("google_project_iam_member", "build"),
    ("google_project_iam_member", "build_staged_source_reader"),
    ("google_artifact_registry_repository_iam_member", "build_writer"),
    ("google_storage_bucket_iam_member", "build_reader"),
    ("google_pubsub_topic_iam_member", "intake_publisher"),
    ("google_pubsub_topic_iam_member", "dead_letter_publisher"),
    ("google_project_iam_member", "telemetry_writer"),
}
STATE = "roles/datastore.user on Chimera's database"
# A task carries the tasks account's OIDC token: who enqueues one must act as that account.
# Every function writes its traces and metrics (Cloud Trace and Monitoring grant per project).
TELEMETRY = {"roles/cloudtrace.agent", "roles/monitoring.metricWriter"}
REPORTS = {
    "roles/cloudtasks.enqueuer on queue orchestrator",
    "roles/iam.serviceAccountUser on chimera-tasks",
}


def _secret(name: str) -> str:
    return f"roles/secretmanager.secretAccessor on secret {name}"


def _expected_roles(vertex: bool) -> dict[str, set[str]]:
    """What each function uses, and so all its account may do."""
    model = {"roles/aiplatform.user"} if vertex else {_secret("gemini-api-key")}
    # Each keeps state, reports to (or is) the orchestrator, and writes traces and metrics.
    every = {STATE, *REPORTS, *TELEMETRY}
    return {
        "orchestrator": every
        | {f"roles/cloudtasks.enqueuer on queue tool-{t}" for t in TOOLS}
        | model,
        "orchestrator-intake": every,
        "orchestrator-pubsub": every,
        "tool-clearbit": every | {_secret("clearbit-key")},
        "tool-jira": every | {_secret("jira-token")},
        "tool-sendgrid": every | {_secret("sendgrid-key")} | model,
        "tool-slack": every | {_secret("slack-token")},
    }


def _grants() -> dict[str, dict[str, Any]]:
    return {
        name: body
        for kind, name, body in _all_resources()
        if "_iam_" in kind and (kind, name) in GRANTS
    }


def _function_roles(vertex: bool) -> dict[str, set[str]]:
    """Each function account's roles with gemini_vertexai = `vertex`, read from the grants:
    each grant's expression is pinned, then evaluated on local.functions and local.secrets."""
    functions, secrets, grants = _functions(), _locals()["secrets"], _grants()
    roles: dict[str, set[str]] = {name: set() for name in functions}
    for name, body in grants.items():
        assert (body["member"] in FUNCTION_MEMBERS) == (
            name
            in {
                "enqueuer",
                "tasks_act_as",
                "datastore_user",
                "vertex_user",
                "reader",
                "telemetry_writer",
            }
        ), name

    assert grants["datastore_user"]["for_each"] == (
        "${{for name, f in local.functions : name => f if f.uses_state}}"
    )
    assert (
        "databases/${var.firestore_database}"
        in (grants["datastore_user"]["condition"][0]["expression"])
    )
    for name, f in functions.items():
        if f["uses_state"]:
            roles[name].add(STATE)

    assert grants["enqueuer"]["for_each"] == "${local.enqueue_grants}"
    assert _locals()["enqueue_grants"] == (
        "${{for pair in flatten([for name, f in local.functions : [for queue in f.enqueues_to"
        ' : {function = name, queue = queue}]]) : "${pair.function}/${pair.queue}" => pair}}'
    )
    assert grants["enqueuer"]["name"] == "${google_cloud_tasks_queue.queue[each.value.queue].name}"
    for name, f in functions.items():
        roles[name] |= {f"roles/cloudtasks.enqueuer on queue {q}" for q in f["enqueues_to"]}

    act_as = grants["tasks_act_as"]
    assert act_as["for_each"] == (
        "${{for name, f in local.functions : name => f if length(f.enqueues_to) > 0}}"
    )
    assert act_as["service_account_id"] == "${google_service_account.tasks.name}"
    for name, f in functions.items():
        if f["enqueues_to"]:
            roles[name].add(f"{act_as['role']} on chimera-tasks")

    assert grants["vertex_user"]["for_each"] == (
        "${{for name, f in local.functions : name => f if f.asks_model && var.gemini_vertexai}}"
    )
    for name, f in functions.items():
        if f["asks_model"] and vertex:
            roles[name].add(grants["vertex_user"]["role"])

    telemetry = grants["telemetry_writer"]
    assert telemetry["for_each"] == "${local.telemetry_grants}"
    assert _locals()["telemetry_grants"] == (
        "${{for pair in setproduct(keys(local.functions), local.telemetry_roles) : "
        '"${pair[0]}/${pair[1]}" => {function = pair[0], role = pair[1]}}}'
    )
    assert (telemetry["role"], telemetry["project"]) == ("${each.value.role}", "${var.project_id}")
    for name in functions:
        roles[name] |= set(_locals()["telemetry_roles"])

    assert grants["reader"]["for_each"] == "${local.secret_reads}"
    assert _locals()["secret_reads"] == (
        "${{for pair in flatten([for secret, s in local.secrets : [for function in s.readers"
        " : {function = function, secret = secret, env = s.env}] if !(var.gemini_vertexai"
        ' && try(s.unused_with_vertex, false))]) : "${pair.function}/${pair.secret}" => pair}}'
    )
    for secret, config in secrets.items():
        if vertex and config.get("unused_with_vertex", False):
            continue
        for reader in config["readers"]:
            roles[reader].add(_secret(secret))
    return roles


def test_every_iam_grant_is_one_the_least_privilege_tests_know() -> None:
    made = {(kind, name) for kind, name, _ in _all_resources() if "_iam_" in kind}
    assert made == GRANTS
    for kind, _, _ in _all_resources():
        assert not kind.endswith(("_iam_binding", "_iam_policy")), "members only: no takeovers"


@pytest.mark.parametrize("vertex", [False, True], ids=["gemini-api", "vertex-ai"])
def test_each_function_account_holds_exactly_the_roles_it_uses(vertex: bool) -> None:
    assert _function_roles(vertex) == _expected_roles(vertex)
    # What each function uses is declared beside it, and only the model's users ask it.
    asks = {name for name, f in _functions().items() if f["asks_model"]}
    assert asks == {"orchestrator", "tool-sendgrid"}
    assert set(_locals()["secrets"]["gemini-api-key"]["readers"]) == asks


def test_the_other_accounts_hold_exactly_their_one_job() -> None:
    grants = _grants()
    by_member: dict[str, set[str]] = defaultdict(set)
    for name, body in grants.items():
        if body["member"] not in FUNCTION_MEMBERS:
            by_member[body["member"]].add(f"{body['role']} via {name}")
    assert by_member == {
        # Cloud Tasks' OIDC identity: invoke the queue targets, nothing else.
        "${google_service_account.tasks.member}": {"roles/run.invoker via tasks_invoker"},
        # Eventarc's: invoke the Pub/Sub intake.
        "${google_service_account.intake_trigger.member}": {
            "roles/run.invoker via trigger_invoker"
        },
        # Builds: write logs and its image repository, read the bundles and staged sources.
        "${google_service_account.build.member}": {
            "${each.value} via build",
            "roles/artifactregistry.writer via build_writer",
            "roles/storage.objectViewer via build_reader",
            "roles/storage.objectViewer via build_staged_source_reader",
        },
        "${each.value}": {  # the named members of var.intake_invokers / var.intake_publishers
            "roles/run.invoker via intake_invoker",
            "roles/pubsub.publisher via intake_publisher",
        },
        "${local.pubsub_service_agent}": {"roles/pubsub.publisher via dead_letter_publisher"},
    }
    assert grants["build"]["for_each"] == '${toset(["roles/logging.logWriter"])}'
    assert grants["tasks_invoker"]["for_each"] == (
        '${{for name, f in local.functions : name => f if f.invoked_by == "tasks"}}'
    )
    assert grants["trigger_invoker"]["for_each"] == (
        '${{for name, f in local.functions : name => f if f.invoked_by == "eventarc"}}'
    )
    assert "gcf-v2-sources-" in grants["build_staged_source_reader"]["condition"][0]["expression"]


def test_the_intake_verifies_identity_by_default_and_names_its_operators() -> None:
    variables = _variables()
    assert variables["intake_require_identity"]["default"] is True
    assert variables["intake_operators"]["default"] == []
    env = _functions()["orchestrator-intake"]["env"]
    assert env == {
        "CHIMERA_INTAKE_REQUIRE_IDENTITY": "${tostring(var.intake_require_identity)}",
        "CHIMERA_INTAKE_AUDIENCE": "${var.intake_audience}",
        "CHIMERA_INTAKE_OPERATORS": '${join(",", var.intake_operators)}',
    }
    on_gcp = Settings.from_env(
        {
            "CHIMERA_BACKEND": "gcp",
            "CHIMERA_GCP_PROJECT": "p",
            "CHIMERA_INTAKE_REQUIRE_IDENTITY": "true",
            "CHIMERA_INTAKE_OPERATORS": "ops@acme.example,lead@acme.example",
        }
    )
    assert on_gcp.intake_identity_required and on_gcp.intake_operators


# --- Settings, timeouts, queues ---------------------------------------------------------------


def test_every_variable_has_a_description_and_a_type() -> None:
    for name, body in _variables().items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"


def test_example_tfvars_sets_only_declared_variables() -> None:
    with (TERRAFORM / "terraform.tfvars.example").open() as handle:
        example = _clean(hcl2.load(handle))
    assert set(example) <= set(_variables())
    required = {name for name, body in _variables().items() if "default" not in body}
    assert required <= set(example), "the example leaves a required variable out"


def test_environment_names_are_settings_fields() -> None:
    fields = {variable(name) for name in Settings.model_fields}
    fixed = _locals()["fixed_environment"]
    assert set(fixed) == EVERY_FUNCTION_ENV
    assert fixed["CHIMERA_BACKEND"] == "gcp"
    assert fixed["CHIMERA_LOG_FORMAT"] == "json"
    assert fixed["CHIMERA_TELEMETRY_EXPORTER"] == "gcp"
    assert fixed["CHIMERA_STATE_URL"].startswith("firestore://")
    functions = _functions()
    own = {key for f in functions.values() for key in f["env"]}
    assert [n for n, f in functions.items() if "CHIMERA_JIRA_USER" in f["env"]] == ["tool-jira"]
    for name, f in functions.items():
        if f["invoked_by"] == "tasks":  # behind IAM, the targets check the tasks' tokens too
            assert "verify_task_identity" in f["env"]["CHIMERA_REQUIRE_IDENTITY"], name
    assert _variables()["verify_task_identity"]["default"] is True
    for name in (*fixed, *own, *SECRET_READERS):
        assert name in fields, f"{name} is not a Settings field"


def test_vendor_url_defaults_are_the_vendors_documented_base_urls() -> None:
    variables = _variables()
    for vendor in ("clearbit", "sendgrid", "slack"):
        default = variables[f"{vendor}_url"]["default"]
        assert default == VENDOR_ENDPOINTS[vendor].documented, vendor
        assert Settings(**{f"{vendor}_url": default}).vendor_url_problems() == [], vendor
    # Jira's is the customer's own site: required, and shaped like the documented one.
    assert "default" not in variables["jira_url"]
    with (TERRAFORM / "terraform.tfvars.example").open() as handle:
        example = _clean(hcl2.load(handle))
    assert Settings(jira_url=example["jira_url"]).vendor_url_problems() == []
    assert urlsplit(example["jira_url"]).hostname.endswith(".atlassian.net")
    # Gemini's follows the mode: the Gemini API, or Vertex AI in the functions' region, which
    # is also the location they name, so the start-up check accepts either.
    assert variables["gemini_url"]["default"] == ""
    chosen = _locals()["gemini_url"]
    vertex = VERTEX_AI_URL.format(location="${var.region}")
    assert f'var.gemini_vertexai ? "{vertex}" : "{VENDOR_ENDPOINTS["gemini"].documented}"' in chosen
    fixed = _locals()["fixed_environment"]
    assert fixed["CHIMERA_GEMINI_URL"] == "${local.gemini_url}"
    assert fixed["CHIMERA_GEMINI_LOCATION"] == "${var.region}"
    region = "europe-west4"
    for vertexai, url in ((False, VENDOR_ENDPOINTS["gemini"].documented), (True, vertex)):
        configured = Settings(
            gemini_url=url.replace("${var.region}", region),
            gemini_vertexai=vertexai,
            gemini_location=region,
        )
        assert configured.vendor_url_problems() == []


def test_timeouts_chain_when_defaults_are_used() -> None:
    variables = _variables()
    connect = variables["vendor_connect_timeout"]["default"]
    read = variables["vendor_read_timeout"]["default"]
    dispatch = variables["dispatch_deadline"]["default"]
    function_timeout = variables["function_timeout"]["default"]

    local = Settings()
    assert connect == pytest.approx(local.vendor_connect_timeout)
    assert read == pytest.approx(local.vendor_read_timeout)
    assert dispatch == pytest.approx(local.dispatch_deadline)
    assert function_timeout == pytest.approx(local.function_timeout)

    assert 15 <= dispatch <= 1800, "Cloud Tasks accepts dispatch deadlines of 15s to 30min"
    assert connect + read < dispatch
    for name, f in _functions().items():
        assert dispatch < _default(f["timeout_seconds"]), name
    service = _resources("google_cloudfunctions2_function")["function"]["service_config"][0]
    assert service["timeout_seconds"] == "${each.value.timeout_seconds}"


def test_finished_runs_expire_by_ttl_on_every_collection_a_run_writes() -> None:
    from shared import firestore_state

    [ttl] = [b for b in _resources("google_firestore_field").values() if "ttl_config" in b]
    groups = set(ttl["for_each"].values())
    # The run, its ledger and its trail: TTL deletes a document, never its subcollections.
    assert groups == {firestore_state.RUNS, firestore_state.STEPS, firestore_state.EVENTS}
    assert ttl["collection"] == "${each.value}"
    assert ttl["field"] == firestore_state.EXPIRE_AT == "expire_at"
    assert ttl["ttl_config"] == [{}]
    # Not indexed: no query reads it, and an index on a growing timestamp is a hotspot.
    assert ttl["index_config"] == [{}]
    assert ttl["database"] == "${google_firestore_database.state.name}"


def test_the_index_runs_prune_needs_is_declared() -> None:
    index = _resources("google_firestore_index")["runs_by_status_and_updated"]
    assert index["collection"] == "runs"
    assert [(f["field_path"], f["order"]) for f in index["fields"]] == [
        ("status", "ASCENDING"),
        ("updated_at", "ASCENDING"),
    ]


def test_queues_match_shared_queues() -> None:
    queues = _locals()["queues"]
    assert set(queues) == set(QUEUES) == {"orchestrator", *(f"tool-{t}" for t in TOOLS)}
    for name, config in QUEUES.items():
        tf = queues[name]
        assert tf["target"] == config.target, name
        for field in (
            "max_attempts",
            "min_backoff",
            "max_backoff",
            "max_doublings",
            "max_dispatches_per_second",
            "max_concurrent_dispatches",
        ):
            assert tf[field] == pytest.approx(getattr(config, field)), f"{name}.{field}"
        assert config.target in _functions(), f"{name} targets an unknown function"

    queue = _resources("google_cloud_tasks_queue")["queue"]
    assert queue["for_each"] == "${local.queues}"
    assert queue["name"] == "${each.key}"
    assert queue["retry_config"][0]["max_attempts"] == "${each.value.max_attempts}"
    assert queue["rate_limits"][0]["max_concurrent_dispatches"] == (
        "${each.value.max_concurrent_dispatches}"
    )


def test_queue_targets_absorb_their_concurrent_dispatches() -> None:
    functions = _functions()
    for name, config in QUEUES.items():
        target = functions[config.target]
        capacity = target["max_instances"] * target["concurrency"]
        assert capacity >= config.max_concurrent_dispatches, name


def test_log_fields_operators_query_are_top_level_in_json_logs() -> None:
    record = logging.LogRecord("chimera", logging.INFO, __file__, 1, "step done", None, None)
    record.tool = "jira"
    record.latency_ms = 12
    record.outcome = "parked"
    entry = json.loads(CloudLoggingFormatter().format(record))
    assert {"tool": "jira", "latency_ms": 12, "outcome": "parked"}.items() <= entry.items()


# --- Monitoring: the dashboard and the alerts read exactly the telemetry contract's metrics ------

# The metric contract of issue 12 (shared/telemetry.py emits these): name -> its attributes.
METRICS = {
    "chimera.tool.calls": {"tool", "vendor", "outcome"},
    "chimera.tool.errors": {"tool", "vendor", "error.code"},
    "chimera.tool.duration": {"tool", "vendor"},
    "chimera.tool.retries": {"tool", "vendor"},
    "chimera.vendor.request.duration": {"vendor", "http.response.status_code"},
    "chimera.breaker.state": {"vendor"},
    "chimera.queue.depth": {"queue"},
    "chimera.queue.oldest_task_age": {"queue"},
    "chimera.runs": {"outcome"},
    "gen_ai.client.token.usage": {
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.token.type",
    },
    "chimera.llm.cost": {"gen_ai.request.model"},
}
RUN_OUTCOMES = {"succeeded", "parked", "cancelled", "waiting"}
WORKLOAD = "workload.googleapis.com/"
CLOUD_TASKS_DEPTH = "cloudtasks.googleapis.com/queue/depth"
# Built-in metrics, with the labels they are grouped by.
BUILT_IN = {CLOUD_TASKS_DEPTH: {"resource.label.queue_id"}}
DASHBOARD = TERRAFORM / "dashboards" / "operations.json.tftpl"


def _label(attribute: str) -> str:
    """An attribute's label in Cloud Monitoring: the exporter makes every other character `_`."""
    return "".join(c if c.isalnum() else "_" for c in attribute)


def _resolved(expression: str) -> str:
    """A filter as Cloud Monitoring gets it: string locals filled in, HCL's escapes undone."""
    for name, value in _locals().items():
        if isinstance(value, str) and "${" not in value:
            expression = expression.replace(f"${{local.{name}}}", value)
    return expression.replace('\\"', '"')


def _metric_type(series_filter: str) -> str:
    (metric,) = re.findall(r'metric\.type="([^"]+)"', series_filter)
    return metric


def _check_series(series_filter: str, group_by: list[str]) -> str:
    """The metric a chart or condition reads, after checking it is the contract's, on the
    resource its exporter writes, grouped and filtered by labels the metric has."""
    metric = _metric_type(series_filter)
    used = set(group_by) | {
        f"metric.label.{m}" for m in re.findall(r"metric\.label\.(\w+)", series_filter)
    }
    if metric.startswith(WORKLOAD):
        name = metric.removeprefix(WORKLOAD)
        assert name in METRICS, f"{metric} is not in the metric contract"
        assert 'resource.type="generic_task"' in series_filter, series_filter
        assert used <= {f"metric.label.{_label(a)}" for a in METRICS[name]}, (metric, used)
    else:
        assert metric in BUILT_IN, metric
        assert set(group_by) <= BUILT_IN[metric], (metric, group_by)
    for outcome in re.findall(r'metric\.label\.outcome="(\w+)"', series_filter):
        assert outcome in RUN_OUTCOMES, outcome
    return metric


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text().replace("${environment}", "test"))


def _charts() -> dict[str, tuple[str, dict[str, Any]]]:
    """Each chart's title -> (its filter, its aggregation)."""
    charts = {}
    for tile in _dashboard()["mosaicLayout"]["tiles"]:
        widget = tile["widget"]
        (data_set,) = widget["xyChart"]["dataSets"]
        query = data_set["timeSeriesQuery"]["timeSeriesFilter"]
        charts[widget["title"]] = (query["filter"], query["aggregation"])
    return charts


def _conditions() -> dict[str, list[dict[str, Any]]]:
    """Each alert policy's threshold conditions."""
    return {
        name: [c["condition_threshold"][0] for c in policy["conditions"]]
        for name, policy in _resources("google_monitoring_alert_policy").items()
    }


def test_the_dashboard_charts_every_contract_metric_and_nothing_else() -> None:
    (dashboard,) = _resources("google_monitoring_dashboard").values()
    assert "/dashboards/operations.json.tftpl" in dashboard["dashboard_json"]
    assert "templatefile(" in dashboard["dashboard_json"]
    assert "${" not in DASHBOARD.read_text().replace("${environment}", "")
    charts = _charts()
    read = {_check_series(f, a.get("groupByFields", [])) for f, a in charts.values()}
    assert read == {WORKLOAD + name for name in METRICS} | set(BUILT_IN)
    # What the issue asks to see, each in its chart.
    by_metric = {_metric_type(f): (f, a) for f, a in charts.values() if "parked" not in f}
    latency = by_metric[WORKLOAD + "chimera.tool.duration"][1]
    assert latency["crossSeriesReducer"] == "REDUCE_PERCENTILE_99"
    assert latency["groupByFields"] == ["metric.label.vendor"]
    errors = by_metric[WORKLOAD + "chimera.tool.errors"][1]
    assert "metric.label.error_code" in errors["groupByFields"]
    tokens = by_metric[WORKLOAD + "gen_ai.client.token.usage"][1]
    assert "metric.label.gen_ai_token_type" in tokens["groupByFields"]
    parked = [f for f, _ in charts.values() if 'metric.label.outcome="parked"' in f]
    assert [_metric_type(f) for f in parked] == [WORKLOAD + "chimera.runs"]
    breaker = next(
        t["widget"]["xyChart"]
        for t in _dashboard()["mosaicLayout"]["tiles"]
        if "chimera.breaker.state" in json.dumps(t)
    )
    assert [t["value"] for t in breaker["thresholds"]] == [2]  # open
    # Tiles on the 48-column grid, none overlapping.
    cells = set()
    for tile in _dashboard()["mosaicLayout"]["tiles"]:
        assert tile["xPos"] + tile["width"] <= 48
        area = {
            (x, y)
            for x in range(tile["xPos"], tile["xPos"] + tile["width"])
            for y in range(tile["yPos"], tile["yPos"] + tile["height"])
        }
        assert not cells & area, tile["widget"]["title"]
        cells |= area


def test_the_alerts_watch_latency_queues_parked_runs_and_breakers_by_contract_metric() -> None:
    conditions = _conditions()
    read = {
        name: {
            _check_series(_resolved(c["filter"]), c["aggregations"][0].get("group_by_fields", []))
            for c in found
        }
        for name, found in conditions.items()
    }
    assert read == {
        "step_latency_p99": {WORKLOAD + "chimera.tool.duration"},
        "queue_backlog": {CLOUD_TASKS_DEPTH, WORKLOAD + "chimera.queue.oldest_task_age"},
        "parked_runs": {WORKLOAD + "chimera.runs"},
        "breaker_open": {WORKLOAD + "chimera.breaker.state"},
    }
    # Cloud Monitoring compares thresholds with GT or LT only.
    assert {c["comparison"] for found in conditions.values() for c in found} == {"COMPARISON_GT"}
    (latency,) = conditions["step_latency_p99"]
    assert latency["aggregations"][0]["cross_series_reducer"] == "REDUCE_PERCENTILE_99"
    assert latency["aggregations"][0]["group_by_fields"] == ["metric.label.vendor"]
    (parked,) = conditions["parked_runs"]
    assert 'metric.label.outcome="parked"' in _resolved(parked["filter"])
    assert (parked["threshold_value"], parked["duration"]) == (0, "0s")  # any parked run
    (breaker,) = conditions["breaker_open"]
    assert 1 < breaker["threshold_value"] < 2  # open (2), not half-open (1)
    for policy in _resources("google_monitoring_alert_policy").values():
        assert policy["notification_channels"] == "${var.notification_channels}"


def test_alert_thresholds_are_variables_whose_defaults_fire_before_a_step_gives_up() -> None:
    variables = _variables()
    conditions = _conditions()
    (latency,) = conditions["step_latency_p99"]
    # The histogram is in seconds, the variable in milliseconds.
    assert latency["threshold_value"] == "${var.step_latency_p99_threshold_ms / 1000}"
    latency_s = variables["step_latency_p99_threshold_ms"]["default"] / 1000
    assert 0 < latency_s < variables["dispatch_deadline"]["default"]
    depth, age = conditions["queue_backlog"]
    assert depth["threshold_value"] == "${var.queue_backlog_threshold}"
    assert age["threshold_value"] == "${var.queue_oldest_task_age_threshold_s}"
    oldest = variables["queue_oldest_task_age_threshold_s"]["default"]
    dispatch = variables["dispatch_deadline"]["default"]
    shortest_window = min(
        q.retry_window(dispatch) for name, q in QUEUES.items() if name != "orchestrator"
    )
    assert 0 < oldest < shortest_window
    (breaker,) = conditions["breaker_open"]
    assert breaker["duration"] == "${var.breaker_open_alert_after_s}s"
    assert variables["breaker_open_alert_after_s"]["default"] >= 0


def test_the_functions_export_traces_and_metrics_to_google_cloud() -> None:
    assert _locals()["fixed_environment"]["CHIMERA_TELEMETRY_EXPORTER"] == "gcp"
    assert {"cloudtrace.googleapis.com", "monitoring.googleapis.com"} <= set(
        re.findall(r'"([a-z]+\.googleapis\.com)"', (TERRAFORM / "apis.tf").read_text())
    )
    assert set(_locals()["telemetry_roles"]) == TELEMETRY


# --- Bundles ----------------------------------------------------------------------------------


def test_every_function_is_served_by_a_bundle_that_exports_its_entry_point() -> None:
    bundles = _build_bundles().BUNDLES
    for name, f in _functions().items():
        assert f["bundle"] in bundles, name
        assert f["entry_point"] in bundles[f["bundle"]].entry_points, name


def _tree(root: Path) -> None:
    for path, text in {
        "shared/__init__.py": "",
        "shared/settings.py": "X = 1\n",
        "shared/__pycache__/settings.cpython-311.pyc": "junk",
        "tools/__init__.py": "",
        "tools/jira/__init__.py": "",
        "tools/jira/main.py": "def run_tool(request):\n    return 'ok'\n",
        "tools/jira/requirements.txt": "functions-framework>=3.8,<4\n",
        "tools/slack/main.py": "",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_bundle_holds_shared_its_folder_and_a_root_main_when_built(tmp_path: Path) -> None:
    builder = _build_bundles()
    _tree(tmp_path / "repo")
    (built,) = builder.build(tmp_path / "repo", tmp_path / "out", ["tool-jira"]).values()

    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        root_main = archive.read("main.py").decode()
        requirements = archive.read("requirements.txt").decode()
    assert names == {
        "main.py",
        "requirements.txt",
        "shared/__init__.py",
        "shared/settings.py",
        "tools/__init__.py",
        "tools/jira/__init__.py",
        "tools/jira/main.py",
        "tools/jira/requirements.txt",
    }
    assert "from tools.jira.main import run_tool" in root_main
    assert requirements == "functions-framework>=3.8,<4\n"


def test_bundle_bytes_are_the_same_when_built_twice(tmp_path: Path) -> None:
    builder = _build_bundles()
    _tree(tmp_path / "repo")
    first = builder.build(tmp_path / "repo", tmp_path / "a", ["tool-jira"])["tool-jira"]
    os.utime(tmp_path / "repo" / "tools/jira/main.py", (1, 1))
    second = builder.build(tmp_path / "repo", tmp_path / "b", ["tool-jira"])["tool-jira"]
    assert first.read_bytes() == second.read_bytes()


def test_bundle_build_fails_when_a_requirements_file_is_missing(tmp_path: Path) -> None:
    builder = _build_bundles()
    _tree(tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match="tools/slack/requirements.txt"):
        builder.build(tmp_path / "repo", tmp_path / "out", ["tool-slack"])
