"""Settings: one reader of the environment, local defaults, and the timeout chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings


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
