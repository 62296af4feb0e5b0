"""Settings: one reader of the environment, local defaults, and the timeout chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimera.cli import main
from shared.settings import Settings, SettingsError, variable
from shared.state_urls import firestore_location, sqlite_path, state_url_problem
from shared.vendor_urls import VENDOR_ENDPOINTS


def test_defaults_run_locally_with_no_environment():
    settings = Settings.from_env({})
    assert settings.backend == "local"
    assert settings.state_location == f"sqlite:///{Path('.chimera') / 'chimera.db'}"
    assert settings.vendor_url("jira") == "http://127.0.0.1:8086/jira"


def test_environment_values_are_typed():
    settings = Settings.from_env(
        {
            "CHIMERA_HOME": "/tmp/x",
            "CHIMERA_DISPATCH_DEADLINE": "40",
            "CHIMERA_FUNCTION_TIMEOUT": "90",
            "CHIMERA_REQUIRE_IDENTITY": "true",
            "CHIMERA_JIRA_URL": "https://acme.atlassian.net",
        }
    )
    assert settings.home == Path("/tmp/x") and settings.dispatch_deadline == 40.0
    assert settings.require_identity is True
    assert settings.vendor_url("jira") == "https://acme.atlassian.net"


def test_timeouts_must_chain_vendor_then_dispatch_then_function():
    defaults = Settings()
    assert defaults.vendor_deadline < defaults.dispatch_deadline < defaults.function_timeout
    with pytest.raises(ValueError, match="timeouts must chain"):
        Settings.from_env(
            {"CHIMERA_VENDOR_READ_TIMEOUT": "30", "CHIMERA_ENRICHMENT_PROVIDERS": "website"}
        )
    with pytest.raises(ValueError, match="timeouts must chain"):
        Settings.from_env({"CHIMERA_DISPATCH_DEADLINE": "90"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CHIMERA_BACKEND", "aws"),
        ("CHIMERA_UNKNOWN_OUTCOME", "guess"),
        ("CHIMERA_DISPATCH_DEADLINE", "soon"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(key, value):
    with pytest.raises(ValueError, match=key.removeprefix("CHIMERA_").split("_")[0]):
        Settings.from_env({key: value})


def test_secrets_never_show_in_repr():
    settings = Settings.from_env({"CHIMERA_SLACK_TOKEN": "xoxb-very-secret-token"})
    assert "xoxb-very-secret-token" not in repr(settings)
    assert "xoxb-very-secret-token" in settings.secret_values()


def test_enrichment_providers_in_a_row_must_fit_the_dispatch_deadline():
    with pytest.raises(ValueError, match="enrichment providers"):
        Settings.from_env({"CHIMERA_VENDOR_READ_TIMEOUT": "12"})  # 2 x 15.05 s > 30 s
    assert (
        Settings.from_env(
            {"CHIMERA_VENDOR_READ_TIMEOUT": "12", "CHIMERA_ENRICHMENT_PROVIDERS": "website"}
        ).vendor_read_timeout
        == 12
    )


# -- vendor URLs: the documented base URLs, in their documented shape -------------------------

VENDOR_VARIABLES = {vendor: f"CHIMERA_{vendor.upper()}_URL" for vendor in VENDOR_ENDPOINTS}
SANDBOXES = st.builds(
    "http://{}:{}{}".format,
    st.sampled_from(["127.0.0.1", "localhost", "sandbox.internal"]),
    st.integers(1024, 65535),
    st.sampled_from(["", "/", "//"]),
)


def documented_shape(url: str, vendor: str) -> str:
    """`url` written the way the vendor documents its base: Slack's with /, others without."""
    slash = VENDOR_ENDPOINTS[vendor].documented.endswith("/")
    return url.rstrip("/") + ("/" if slash else "")


@given(vendor=st.sampled_from(sorted(VENDOR_ENDPOINTS)), slashes=st.integers(0, 3))
def test_documented_url_is_accepted_and_kept_in_its_shape_when_written_with_any_trailing_slash(
    vendor, slashes
):
    documented = VENDOR_ENDPOINTS[vendor].documented
    written = documented.rstrip("/") + "/" * slashes

    settings = Settings.from_env({VENDOR_VARIABLES[vendor]: written})

    assert settings.vendor_url(vendor) == documented


@given(vendor=st.sampled_from(sorted(VENDOR_ENDPOINTS)), sandbox=SANDBOXES)
def test_sandbox_default_has_the_documented_shape_when_no_vendor_url_is_set(vendor, sandbox):
    settings = Settings(sandbox_url=sandbox)
    url = settings.vendor_url(vendor)
    documented = VENDOR_ENDPOINTS[vendor].documented

    # The same path as production, under /<vendor>: the client appends the same paths to both.
    assert url == documented_shape(
        f"{sandbox.rstrip('/')}/{vendor}{VENDOR_ENDPOINTS[vendor].path}", vendor
    )
    assert url.endswith("/") == documented.endswith("/")
    assert settings.replace(**{f"{vendor}_url": url}).vendor_url_problems() == []


def test_slack_sandbox_default_ends_in_api_like_slack_itself():
    assert Settings().vendor_url("slack") == "http://127.0.0.1:8086/slack/api/"
    assert Settings().vendor_url("website") == "http://127.0.0.1:8086/website/{domain}/"


@pytest.mark.parametrize(
    "url",
    [
        "https://slack.com/",
        "https://slack.com",
        "https://slack.com/api/api/",  # the old client's doubled prefix, written into the URL
        "https://slack.com/api/chat.postMessage",
        "https://hooks.slack.com/services/T000/B000/XXXX",  # an incoming webhook, not the API
        "http://slack.com/api/",
        "http://127.0.0.1:8086/slack",  # the sandbox's old shape
        "slack.com/api/",
        "https://slack.com/api/?token=xoxb-1",
    ],
)
def test_slack_url_that_cannot_be_right_fails_at_start_up_naming_the_documented_value(url):
    with pytest.raises(ValueError) as refused:
        Settings.from_env({"CHIMERA_SLACK_URL": url})
    assert "CHIMERA_SLACK_URL" in str(refused.value)
    assert "https://slack.com/api/" in str(refused.value)


@pytest.mark.parametrize(
    ("vendor", "url"),
    [
        ("jira", "https://acme.atlassian.net/jira"),  # a board's URL, not the site's
        ("jira", "https://acme.atlassian.net/rest/api/2"),
        ("jira", "https://acme.atlassian.net/browse/ACME-1"),
        ("jira", "http://acme.atlassian.net"),
        ("sendgrid", "https://api.sendgrid.com/v3"),
        ("sendgrid", "https://api.sendgrid.com/v3/mail/send"),
        ("sendgrid", "https://proxy.internal/sendgrid/v3"),
        ("clearbit", "https://company.clearbit.com/v2"),
        ("clearbit", "https://company.clearbit.com/v2/companies/find"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta/models"),
        ("gemini", "https://us-central1-aiplatform.googleapis.com"),  # Vertex AI, but it is off
        ("gemini", "ftp://generativelanguage.googleapis.com"),
    ],
)
def test_vendor_url_that_cannot_be_right_fails_at_start_up_naming_the_documented_value(vendor, url):
    with pytest.raises(ValueError) as refused:
        Settings.from_env({VENDOR_VARIABLES[vendor]: url})
    assert VENDOR_VARIABLES[vendor] in str(refused.value)
    assert VENDOR_ENDPOINTS[vendor].documented in str(refused.value)


@given(
    vendor=st.sampled_from([v for v in sorted(VENDOR_ENDPOINTS) if VENDOR_ENDPOINTS[v].appended]),
    data=st.data(),
    base=st.sampled_from(["documented", "proxy"]),
)
def test_base_url_holding_a_path_the_client_appends_is_refused_when_on_any_host(vendor, data, base):
    endpoint = VENDOR_ENDPOINTS[vendor]
    segment = data.draw(st.sampled_from(sorted(endpoint.appended)))
    root = (
        endpoint.documented.rstrip("/")
        if base == "documented"
        else (f"https://proxy.internal/{vendor}{endpoint.path}")
    )

    with pytest.raises(ValueError, match=f"{VENDOR_VARIABLES[vendor]}.*adds /{segment}"):
        Settings.from_env({VENDOR_VARIABLES[vendor]: f"{root}/{segment}/"})


@pytest.mark.parametrize(
    ("vendor", "url"),
    [
        ("slack", "https://proxy.internal/slack/api"),
        ("sendgrid", "https://api.eu.sendgrid.com"),  # SendGrid's EU region
        ("jira", "https://jira.acme.example/jira"),  # Data Center under a context path
        ("gemini", "http://127.0.0.1:9999/gemini/"),
    ],
)
def test_vendor_url_off_the_vendors_own_domain_is_accepted_when_shaped_like_the_documented_one(
    vendor, url
):
    assert (
        Settings.from_env({VENDOR_VARIABLES[vendor]: url})
        .vendor_url(vendor)
        .startswith(url.rstrip("/"))
    )


@pytest.mark.parametrize(
    ("environment", "accepted"),
    [
        ({"CHIMERA_GEMINI_URL": "https://europe-west4-aiplatform.googleapis.com"}, True),
        ({"CHIMERA_GEMINI_URL": "https://us-central1-aiplatform.googleapis.com"}, False),
        ({"CHIMERA_GEMINI_URL": "https://generativelanguage.googleapis.com"}, False),
        ({"CHIMERA_GEMINI_URL": "https://aiplatform.europe-west4.rep.googleapis.com"}, True),
        ({"CHIMERA_GEMINI_URL": "https://aiplatform.googleapis.com"}, False),
        (
            {
                "CHIMERA_GEMINI_URL": "https://aiplatform.googleapis.com",
                "CHIMERA_GEMINI_LOCATION": "global",
            },
            True,
        ),
    ],
)
def test_vertex_ai_url_must_serve_the_configured_location_when_vertex_is_on(environment, accepted):
    env = {"CHIMERA_GEMINI_VERTEXAI": "true", "CHIMERA_GEMINI_LOCATION": "europe-west4"}
    env.update(environment)
    if accepted:
        Settings.from_env(env)
        return
    with pytest.raises(ValueError, match="CHIMERA_GEMINI_URL.*aiplatform.googleapis.com"):
        Settings.from_env(env)


def test_website_url_must_hold_the_domain_placeholder_when_set():
    assert Settings.from_env({"CHIMERA_WEBSITE_URL": "https://{domain}/"}).website_url
    with pytest.raises(ValueError, match=r"CHIMERA_WEBSITE_URL.*\{domain\}.*https://\{domain\}/"):
        Settings.from_env({"CHIMERA_WEBSITE_URL": "https://example.com/"})
    with pytest.raises(ValueError, match="CHIMERA_WEBSITE_URL"):
        Settings.from_env({"CHIMERA_WEBSITE_URL": "file:///{domain}"})


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("CHIMERA_JIRA_URL", "https://bot:hunter2@acme.atlassian.net"),
        ("CHIMERA_SLACK_URL", "https://slack.com/api/?token=hunter2"),
        ("CHIMERA_GEMINI_URL", "https://generativelanguage.googleapis.com/?key=hunter2"),
        ("CHIMERA_SENDGRID_URL", "https://api.sendgrid.com/#hunter2"),
    ],
)
def test_credentials_written_into_a_vendor_url_are_refused_and_never_repeated(variable, url):
    with pytest.raises(ValueError) as refused:
        Settings.from_env({variable: url})
    assert variable in str(refused.value)
    assert "hunter2" not in str(refused.value)


# -- one reader of the environment, typed values, settings that disagree ----------------------

BOOLEAN_FIELDS = sorted(n for n, f in Settings.model_fields.items() if f.annotation is bool)
TRUE_WORDS, FALSE_WORDS = ["1", "true", "yes", "on"], ["0", "false", "no", "off"]


def cased(words: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(words).flatmap(
        lambda w: st.builds("".join, st.tuples(*(st.sampled_from([c, c.upper()]) for c in w)))
    )


def test_settings_built_directly_read_no_environment_when_from_env_does(monkeypatch):
    monkeypatch.setenv("CHIMERA_BACKEND", "gcp")
    monkeypatch.setenv("CHIMERA_STATE_URL", "firestore://acme-prod")
    assert Settings().backend == "local" and Settings().state_url == ""
    assert Settings.from_env().state_location == "firestore://acme-prod"


@given(field=st.sampled_from(BOOLEAN_FIELDS), data=st.data())
def test_boolean_variables_read_the_usual_words_in_any_case_when_set(field, data):
    truth = data.draw(st.booleans())
    word = data.draw(cased(TRUE_WORDS if truth else FALSE_WORDS))
    word = (
        data.draw(st.sampled_from(["", " ", "\n"])) + word + data.draw(st.sampled_from(["", "\n"]))
    )
    assert getattr(Settings.from_env({variable(field): word}), field) is truth


@given(
    field=st.sampled_from(BOOLEAN_FIELDS),
    word=st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=12).filter(
        lambda w: w.strip().lower() not in {*TRUE_WORDS, *FALSE_WORDS, "t", "f", "y", "n"}
    ),
)
def test_boolean_variable_that_is_no_yes_or_no_is_refused_naming_it_when_set(field, word):
    # It used to read as off: CHIMERA_REQUIRE_IDENTITY=ture would have turned a check off.
    with pytest.raises(SettingsError, match=variable(field)):
        Settings.from_env({variable(field): word})


def test_every_value_of_the_wrong_type_is_named_at_once():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(
            {
                "CHIMERA_DISPATCH_DEADLINE": "soon",
                "CHIMERA_WEBSITE_MAX_BYTES": "-1",
                "CHIMERA_LOG_FORMAT": "xml",
            }
        )
    lines = str(refused.value).splitlines()
    assert [line.split("=")[0].split(" ")[0] for line in lines] == [
        "CHIMERA_WEBSITE_MAX_BYTES",
        "CHIMERA_DISPATCH_DEADLINE",
        "CHIMERA_LOG_FORMAT",
    ]
    assert "CHIMERA_LOG_FORMAT must be text or json, not 'xml'" in lines


def test_a_secret_of_the_wrong_type_is_refused_without_its_value():
    with pytest.raises(SettingsError, match="CHIMERA_SLACK_TOKEN") as refused:
        Settings(slack_token=["xoxb-very-secret-token"])
    assert "xoxb-very-secret-token" not in str(refused.value)


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"CHIMERA_STATE_URL": "firestore://acme-prod"}, "CHIMERA_BACKEND=gcp"),
        (
            {"CHIMERA_STATE_URL": "firestore://acme-prod/chimera", "CHIMERA_BACKEND": "local"},
            "CHIMERA_BACKEND=gcp",
        ),
        (
            {"CHIMERA_STATE_URL": "sqlite:///var/chimera.db", "CHIMERA_BACKEND": "gcp"},
            "CHIMERA_BACKEND=gcp",
        ),
    ],
)
def test_state_url_of_the_other_backend_fails_at_start_up_naming_both_variables(environment, named):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environment)
    message = str(refused.value)
    assert f"CHIMERA_STATE_URL={environment['CHIMERA_STATE_URL']}" in message
    assert named in message


@pytest.mark.parametrize(
    "url",
    [
        "postgres://chimera:hunter2@db.internal/chimera",
        "sqlite:///",
        "sqlite://relative.db",
        "firestore://",
        "firestore://acme-prod/chimera/extra",
    ],
)
def test_state_url_that_names_no_store_fails_at_start_up_without_its_credentials(url):
    backend = "gcp" if url.startswith("firestore") else "local"
    with pytest.raises(SettingsError, match="CHIMERA_STATE_URL") as refused:
        Settings.from_env({"CHIMERA_STATE_URL": url, "CHIMERA_BACKEND": backend})
    assert "hunter2" not in str(refused.value)


def test_each_backend_keeps_state_in_its_own_store_when_no_state_url_is_set(tmp_path):
    assert Settings(home=tmp_path).state_location == f"sqlite:///{tmp_path / 'chimera.db'}"
    gcp = Settings.from_env({"CHIMERA_BACKEND": "gcp", "CHIMERA_GCP_PROJECT": "acme-prod"})
    assert gcp.state_location == "firestore://acme-prod"
    with pytest.raises(SettingsError, match="CHIMERA_STATE_URL.*CHIMERA_GCP_PROJECT"):
        Settings(backend="gcp").state_location  # noqa: B018


def test_website_page_is_the_companys_own_on_gcp_and_the_sandboxs_locally_when_not_set():
    assert Settings(backend="gcp").vendor_url("website") == "https://{domain}/"
    assert Settings().vendor_url("website") == "http://127.0.0.1:8086/website/{domain}/"
    configured = "https://cache.internal/{domain}/index.html"
    for backend in ("local", "gcp"):
        assert Settings(backend=backend, website_url=configured).vendor_url("website") == configured


@given(
    names=st.lists(
        st.tuples(st.sampled_from(["clearbit", "website", "hubspot"]), cased([" ", ""])),
        max_size=6,
    )
)
def test_enrichment_provider_names_keep_their_first_order_once_each_when_written_loosely(names):
    written = ",".join(
        f"{pad}{name.upper() if i % 2 else name}{pad}" for i, (name, pad) in enumerate(names)
    )
    expected = tuple(dict.fromkeys(name for name, _ in names))
    assert Settings(enrichment_providers=written).enrichment_provider_names == expected


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"CHIMERA_STATE_URL": "firestore://acme-prod"}, ["CHIMERA_STATE_URL", "CHIMERA_BACKEND"]),
        ({"CHIMERA_BACKEND": "gcp"}, ["CHIMERA_STATE_URL", "CHIMERA_GCP_PROJECT"]),
        ({"CHIMERA_STATE_URL": "firestore://a/b/c", "CHIMERA_BACKEND": "gcp"}, ["firestore://"]),
    ],
)
def test_cli_stops_before_doing_anything_naming_the_variables_when_settings_disagree(
    monkeypatch, capsys, tmp_path, environment, named
):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)

    assert main(["runs", "list"]) == 2

    printed = " ".join(capsys.readouterr().out.split())
    assert printed.startswith("configuration error:")
    assert all(name in printed for name in named)
    assert not (tmp_path / "home").exists()


@given(
    project=st.from_regex(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", fullmatch=True),
    database=st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9-]{2,61}[a-z0-9]", fullmatch=True)),
    slash=st.booleans(),
)
def test_firestore_state_url_names_its_project_and_database_when_well_formed(
    project, database, slash
):
    url = f"firestore://{project}" + (f"/{database}" if database else "") + ("/" if slash else "")
    assert firestore_location(url) == (project, database or "(default)")
    assert Settings.from_env({"CHIMERA_BACKEND": "gcp", "CHIMERA_STATE_URL": url}).state_url == url
    assert "CHIMERA_BACKEND=gcp" in (state_url_problem(url, "local") or "")


def test_sqlite_state_url_names_its_file_relative_or_absolute():
    assert sqlite_path("sqlite:///runs/chimera.db") == Path("runs/chimera.db")
    assert sqlite_path("sqlite:////var/lib/chimera.db") == Path("/var/lib/chimera.db")
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        sqlite_path("sqlite:///")
