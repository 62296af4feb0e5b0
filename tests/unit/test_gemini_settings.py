"""Which Gemini backend the settings choose, read off the configured client: no network."""

from __future__ import annotations

import pytest

from shared.gemini import GeminiLanguageModel
from shared.settings import Settings

SANDBOX = "http://127.0.0.1:8086/gemini"


def api_client(settings: Settings):
    # The SDK's configured client: what every request is built from.
    return GeminiLanguageModel(settings)._client._api_client


def generate_url(settings: Settings, path: str) -> tuple[str, dict[str, str]]:
    request = api_client(settings)._build_request("post", path, {"contents": []}, None)
    return request.url, request.headers


def test_vertex_client_has_project_and_location_and_no_key_when_vertex_is_chosen(monkeypatch):
    # Keys in the environment must not leak into a Vertex client either.
    monkeypatch.setenv("GOOGLE_API_KEY", "env-key")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
    settings = Settings(
        gemini_vertexai=True, gcp_project="acme-prod", gemini_location="europe-west4"
    )
    client = api_client(settings)

    assert (client.vertexai, client.project, client.location) == (
        True,
        "acme-prod",
        "europe-west4",
    )
    assert client.api_key is None
    url, headers = generate_url(
        settings, "publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert url == (
        f"{SANDBOX}/v1/projects/acme-prod/locations/europe-west4"
        "/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert "x-goog-api-key" not in {k.lower() for k in headers}


def test_vertex_project_is_gemini_project_when_both_are_set():
    settings = Settings(gemini_vertexai=True, gcp_project="infra", gemini_project="ml")
    client = api_client(settings)
    assert (client.project, client.location) == ("ml", "us-central1")


def test_vertex_is_refused_when_no_project_is_set():
    with pytest.raises(ValueError, match="CHIMERA_GEMINI_PROJECT"):
        GeminiLanguageModel(Settings(gemini_vertexai=True))


def test_gemini_api_client_uses_the_key_when_vertex_is_not_chosen():
    settings = Settings(gemini_api_key="k-123456", gcp_project="acme-prod")
    client = api_client(settings)

    assert (client.vertexai, client.api_key, client.project) == (False, "k-123456", None)
    url, headers = generate_url(settings, "models/gemini-2.5-flash:generateContent")
    assert url == f"{SANDBOX}/v1beta/models/gemini-2.5-flash:generateContent"
    assert headers["x-goog-api-key"] == "k-123456"
