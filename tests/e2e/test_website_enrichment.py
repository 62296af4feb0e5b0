"""The website provider through `requests`, against the sandbox's home pages, and in the chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.faults import VENDORS
from sandbox.server import SandboxServer
from shared.errors import PermanentError, RateLimited, VendorUnavailable
from shared.model import Attempt, ToolCall
from shared.settings import Settings
from tests.conftest import make_request
from tools.clearbit.address_guard import AddressGuard, AddressRefused
from tools.clearbit.core import enrich
from tools.clearbit.main import enrichment_providers
from tools.clearbit.website import PeerCheckingAdapter, WebsiteDirectory

FIRST = Attempt(queue="tool-clearbit", task_name="t", retry_count=0, max_attempts=8)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox").start()
    yield server
    server.stop()


@pytest.fixture
def settings(sandbox: SandboxServer, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path, sandbox_url=sandbox.url, vendor_connect_timeout=2.0, vendor_read_timeout=5.0
    )


def enrich_domain(settings: Settings, domain: str, run_id: str = "run-w"):
    call = ToolCall(
        run_id=run_id,
        step_id="enrich",
        tool="enrich_company",
        args={"domain": domain},
        request=make_request(domain=domain),
    )
    return enrich(call, FIRST, enrichment_providers(settings))


def test_website_profile_is_read_from_the_home_page(settings, sandbox):
    company = WebsiteDirectory(settings).find_company("acme-robotics.com", run_id="run-w1")

    assert company is not None
    assert company["name"] == "Acme Robotics"
    assert company["description"].startswith("Acme Robotics is a ")
    assert company["category"]["industry"] and company["metrics"]["employees"]
    assert company["geo"]["city"] and company["geo"]["country"]
    assert company["site"]["sameAs"]
    [record] = sandbox.records.list(vendor="website")
    assert (record["action"], record["status"], record["run_id"]) == ("page.get", 200, "run-w1")
    assert record["path"] == "/website/acme-robotics.com/"


def test_website_answers_when_clearbit_does_not_know_the_domain(settings, sandbox):
    result = enrich_domain(settings, "unknown.example.com", run_id="run-w2")

    assert result.output["found"] and result.output["source"] == "website"
    assert result.output["company"]["name"] == "Unknown"
    records = sandbox.records.list(run_id="run-w2")
    assert [(r["vendor"], r["status"]) for r in records] == [("clearbit", 404), ("website", 200)]


def test_clearbit_answers_and_the_website_is_not_asked_when_clearbit_knows(settings, sandbox):
    result = enrich_domain(settings, "acme-robotics.com")

    assert result.output["source"] == "clearbit"
    assert sandbox.records.list(vendor="website") == []


def test_not_found_when_the_domain_has_no_site(settings):
    result = enrich_domain(settings, "nosite.invalid")

    assert result.output == {"found": False, "domain": "nosite.invalid"}


def test_oversized_page_is_a_permanent_error(settings):
    with pytest.raises(PermanentError) as caught:
        WebsiteDirectory(settings).find_company("bigsite.example.com", run_id="run-w3")
    assert caught.value.code == "page_too_large" and not caught.value.retryable
    assert "larger than 524288 bytes" in caught.value.message

    only_site = settings.replace(enrichment_providers="website")
    with pytest.raises(PermanentError, match="larger than"):
        enrich_domain(only_site, "bigsite.example.com")
    # With Clearbit's "no profile" also heard, the run goes on with a generic welcome.
    result = enrich_domain(settings, "bigsite.invalid")
    assert result.output["failures"] == {"website": "page_too_large"}


def test_redirect_to_a_private_address_is_refused(settings, sandbox):
    with pytest.raises(AddressRefused, match="169.254.169.254"):
        WebsiteDirectory(settings).find_company("redirect.example.com", run_id="run-w4")
    assert [r["status"] for r in sandbox.records.list(run_id="run-w4")] == [302]


def test_redirect_within_the_site_is_followed(settings, sandbox):
    company = WebsiteDirectory(settings).find_company("moved-acme.example", run_id="run-w5")

    assert company is not None and company["name"] == "Acme"
    assert company["domain"] == "moved-acme.example"
    assert [r["status"] for r in sandbox.records.list(run_id="run-w5")] == [301, 200]


def test_too_many_redirects_is_a_permanent_error(settings):
    directory = WebsiteDirectory(settings.replace(website_max_redirects=0))
    with pytest.raises(PermanentError) as caught:
        directory.find_company("moved-acme.example", run_id="run-w6")
    assert caught.value.code == "too_many_redirects"


def test_connection_is_refused_when_dns_rebinds_between_check_and_connect(sandbox):
    # The resolver says public (what a rebinding DNS answers first); the connection then lands
    # on loopback. The peer check refuses it before the request is sent.
    guard = AddressGuard(resolver=lambda host, port: ["93.184.216.34"])
    session = requests.Session()
    session.mount("http://", PeerCheckingAdapter(guard))
    url = sandbox.url.replace("127.0.0.1", "localhost") + "/website/acme.example/"

    guard.check_url(url)
    with pytest.raises(AddressRefused, match="connected to (127.0.0.1|::1)"):
        session.get(url, timeout=5)
    assert sandbox.records.list() == []  # not a byte reached the server


def test_website_url_template_is_used_when_configured(sandbox, tmp_path):
    settings = Settings(
        home=tmp_path,
        backend="local",
        sandbox_url="http://127.0.0.1:9",  # nothing there: the template must win
        website_url=f"{sandbox.url}/website/{{domain}}/",
    )
    assert WebsiteDirectory(settings).find_company("globex.example", run_id="r") is not None


def test_website_faults_map_to_retryable_errors_when_injected(tmp_path):
    # Asserted, not skipped on: without the website among the sandbox's vendors, this feature
    # is gone, and that must fail here.
    assert "website" in VENDORS
    spec = "website.error=0.5,website.rate_limit=0.5,seed=1"
    with SandboxServer(tmp_path / "faulty", faults=spec) as server:
        directory = WebsiteDirectory(Settings(home=tmp_path, sandbox_url=server.url))
        seen = []
        for n in range(8):
            with pytest.raises((VendorUnavailable, RateLimited)) as caught:
                directory.find_company(f"acme{n}.example", run_id="run-f")
            seen.append(type(caught.value))
        records = server.records.list(vendor="website", run_id="run-f")
    assert set(seen) == {VendorUnavailable, RateLimited}
    # Each error read is what the sandbox answered: a rate limit for each 429, else a 5xx.
    assert [r["fault"] for r in records] == [
        "rate_limit" if e is RateLimited else "error" for e in seen
    ]
    assert all((r["status"] == 429) == (r["fault"] == "rate_limit") for r in records)
    assert all(r["status"] >= 500 for r in records if r["fault"] == "error")
