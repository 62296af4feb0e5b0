"""Enrichment across providers, on fakes: who is asked, in what order, and who answered."""

from __future__ import annotations

import pytest

from shared.errors import AuthFailed, PermanentError, VendorUnavailable
from shared.model import Attempt, ToolCall
from shared.settings import Settings
from tests.conftest import make_request
from tests.fakes import FakeDirectory
from tools.clearbit.client import ClearbitDirectory
from tools.clearbit.core import Provider, enrich
from tools.clearbit.main import enrichment_providers
from tools.clearbit.website import WebsiteDirectory

FIRST = Attempt(queue="q", task_name="t", retry_count=0, max_attempts=3)
LAST = Attempt(queue="q", task_name="t", retry_count=2, max_attempts=3)
ACME = {"name": "Acme", "domain": "acme.example", "category": {"industry": "Aerospace"}}
SITE = {"name": "Acme Inc", "domain": "acme.example", "description": "From the home page"}


def enrich_call() -> ToolCall:
    return ToolCall(
        run_id="run-1",
        step_id="enrich",
        tool="enrich_company",
        args={"domain": "acme.example"},
        request=make_request(),
    )


def chain(clearbit: FakeDirectory, website: FakeDirectory) -> list[Provider]:
    return [Provider("clearbit", clearbit), Provider("website", website)]


def test_first_provider_answers_when_it_has_the_domain():
    clearbit, website = FakeDirectory({"acme.example": ACME}), FakeDirectory()
    result = enrich(enrich_call(), FIRST, chain(clearbit, website))

    assert result.output["source"] == "clearbit" and result.output["company"]["name"] == "Acme"
    assert "failures" not in result.output and "(from clearbit)" in result.summary
    assert website.calls == []


def test_next_provider_answers_when_the_first_has_no_profile():
    clearbit, website = FakeDirectory(), FakeDirectory({"acme.example": SITE})
    result = enrich(enrich_call(), FIRST, chain(clearbit, website))

    assert result.output["found"] and result.output["source"] == "website"
    assert result.output["company"]["description"] == "From the home page"
    assert clearbit.calls == website.calls == ["acme.example"]


@pytest.mark.parametrize(
    "error",
    [
        AuthFailed("Clearbit answered 401: sunset key"),
        PermanentError("Clearbit answered 410 (the API was retired)", code="clearbit_gone"),
    ],
)
def test_next_provider_answers_when_the_first_fails_for_good(error):
    website = FakeDirectory({"acme.example": SITE})
    result = enrich(enrich_call(), FIRST, chain(FakeDirectory(error=error), website))

    assert result.output["source"] == "website"
    assert result.output["failures"] == {"clearbit": error.code}


def test_retryable_failure_goes_to_the_queue_when_attempts_remain():
    website = FakeDirectory({"acme.example": SITE})
    with pytest.raises(VendorUnavailable):
        enrich(enrich_call(), FIRST, chain(FakeDirectory(error=VendorUnavailable("503")), website))
    assert website.calls == []


def test_retryable_failure_falls_back_when_the_attempt_is_the_last():
    website = FakeDirectory({"acme.example": SITE})
    result = enrich(
        enrich_call(), LAST, chain(FakeDirectory(error=VendorUnavailable("503")), website)
    )
    assert result.output["source"] == "website"
    assert result.output["failures"] == {"clearbit": "unavailable"}


def test_not_found_when_no_provider_has_a_profile():
    result = enrich(enrich_call(), FIRST, chain(FakeDirectory(), FakeDirectory()))

    assert result.output == {"found": False, "domain": "acme.example"}
    assert "clearbit, website" in result.summary


def test_not_found_keeps_the_failures_when_another_provider_had_no_profile():
    too_large = PermanentError("page too large", code="page_too_large")
    result = enrich(enrich_call(), FIRST, chain(FakeDirectory(), FakeDirectory(error=too_large)))

    assert result.output == {
        "found": False,
        "domain": "acme.example",
        "failures": {"website": "page_too_large"},
    }


def test_step_fails_for_good_when_every_provider_fails():
    clearbit = FakeDirectory(error=AuthFailed("Clearbit answered 401"))
    website = FakeDirectory(error=PermanentError("refused", code="address_refused"))
    with pytest.raises(PermanentError) as caught:
        enrich(enrich_call(), FIRST, chain(clearbit, website))

    assert caught.value.code == "auth_failed"
    assert "clearbit: Clearbit answered 401" in caught.value.message
    assert "website: refused" in caught.value.message


def test_providers_are_built_in_the_order_settings_name_them():
    providers = enrichment_providers(Settings(enrichment_providers=" website , clearbit,website"))

    assert [p.name for p in providers] == ["website", "clearbit"]
    assert isinstance(providers[0].directory, WebsiteDirectory)
    assert isinstance(providers[1].directory, ClearbitDirectory)


@pytest.mark.parametrize("names", ["", "clearbit,hubspot", " , "])
def test_providers_are_refused_when_settings_name_none_or_an_unknown_one(names):
    with pytest.raises(ValueError, match="CHIMERA_ENRICHMENT_PROVIDERS"):
        enrichment_providers(Settings(enrichment_providers=names))
