"""The intake's field rules over generated text: what passes is clean, what fails is named."""

from __future__ import annotations

import unicodedata

import idna
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.fields import BIDI_CONTROLS, REFUSED_CATEGORIES
from shared.model import OnboardingRequest

VALID = {
    "company_name": "Acme Corp",
    "domain": "acme.example",
    "contact_email": "ada@acme.example",
    "contact_name": "Ada Lovelace",
    "goal": "Roll out the analytics suite",
    "slack_channel": "#client-onboarding",
    "request_id": "req-1",
}
TEXT_FIELDS = {"company_name": 200, "contact_name": 200, "goal": 2000, "request_id": 128}
# Characters people type: letters, marks, numbers, punctuation, symbols (emoji), spaces.
typed = st.characters(
    categories=("L", "M", "N", "P", "S", "Zs"), exclude_characters=tuple(BIDI_CONTROLS)
)
refused = st.characters(categories=tuple(REFUSED_CATEGORIES)) | st.sampled_from(
    sorted(BIDI_CONTROLS)
)


def refused_field(exc: ValidationError) -> set[str]:
    return {str(err["loc"][0]) for err in exc.errors()}


@given(
    field=st.sampled_from(sorted(TEXT_FIELDS)),
    before=st.text(typed, max_size=20),
    bad=refused,
    after=st.text(typed, max_size=20),
)
def test_a_control_character_is_refused_naming_its_field(field, before, bad, after):
    assume(not (field == "goal" and bad in "\n\t"))
    with pytest.raises(ValidationError) as caught:
        OnboardingRequest(**{**VALID, field: f"x{before}{bad}{after}x"})
    assert refused_field(caught.value) == {field}


@given(st.text(typed, min_size=1, max_size=60).filter(lambda s: s.strip()))
def test_typed_text_is_kept_normalised_and_trimmed(name):
    request = OnboardingRequest(**{**VALID, "company_name": f"  {name}\u00a0"})
    assert request.company_name == unicodedata.normalize("NFC", name).strip()
    # Normalised once for good: the stored request validates to itself (and to its run id).
    again = OnboardingRequest.model_validate(request.model_dump())
    assert again == request and again.run_id() == request.run_id()


@given(st.text(typed, min_size=1, max_size=40).filter(lambda s: s.strip()))
def test_the_same_text_in_another_normal_form_is_the_same_run(name):
    composed = OnboardingRequest(**{**VALID, "company_name": unicodedata.normalize("NFC", name)})
    decomposed = OnboardingRequest(**{**VALID, "company_name": unicodedata.normalize("NFD", name)})
    assert composed.run_id() == decomposed.run_id()


@pytest.mark.parametrize("field, limit", sorted(TEXT_FIELDS.items()))
def test_every_text_field_has_a_length_limit_counted_after_normalising(field, limit):
    OnboardingRequest(**{**VALID, field: "  " + "é" * limit + "  "})
    # e + a combining accent is two code points before NFC and one after.
    OnboardingRequest(**{**VALID, field: "e\u0301" * limit})
    with pytest.raises(ValidationError) as caught:
        OnboardingRequest(**{**VALID, field: "é" * (limit + 1)})
    assert refused_field(caught.value) == {field}


def test_goal_keeps_newlines_and_tabs_and_reads_windows_line_ends_as_newlines():
    request = OnboardingRequest(**{**VALID, "goal": "First:\r\n\t- analytics\nSecond"})
    assert request.goal == "First:\n\t- analytics\nSecond"


@pytest.mark.parametrize("field", ["company_name", "contact_name", "slack_channel", "domain"])
def test_single_line_fields_refuse_newlines(field):
    with pytest.raises(ValidationError) as caught:
        OnboardingRequest(**{**VALID, field: "two\nlines"})
    assert refused_field(caught.value) == {field}


@pytest.mark.parametrize(
    "typed_domain, stored",
    [
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
        ("MÜNCHEN.DE", "xn--mnchen-3ya.de"),
        ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("東京.jp", "xn--1lqs71d.jp"),
        ("https://www.Example.com/", "example.com"),
        ("eu.shop.acme.co.uk.", "eu.shop.acme.co.uk"),
    ],
)
def test_domains_are_kept_as_dns_sees_them(typed_domain, stored):
    assert OnboardingRequest(**{**VALID, "domain": typed_domain}).domain == stored


@pytest.mark.parametrize(
    "bad", ["xn--zz.de", "acme", "acme..com", "-acme.com", "acme.com/about", "a_b.com", "ac me.com"]
)
def test_what_cannot_be_a_domain_is_refused(bad):
    with pytest.raises(ValidationError) as caught:
        OnboardingRequest(**{**VALID, "domain": bad})
    assert refused_field(caught.value) == {"domain"}


@given(
    st.lists(
        st.text(st.characters(categories=("Ll",)), min_size=1, max_size=12), min_size=1, max_size=3
    ),
    st.sampled_from(["de", "com", "jp", "рф"]),
)
def test_an_internationalised_domain_is_stored_as_punycode_that_reads_back(labels, tld):
    typed_domain = ".".join([*labels, tld])
    try:
        expected = idna.encode(typed_domain, uts46=True).decode()
    except idna.IDNAError:
        return  # not a name IDNA 2008 allows (some scripts mix badly): refused is right
    assume(len(expected) <= 253)
    request = OnboardingRequest(**{**VALID, "domain": typed_domain})
    assert request.domain == expected
    assert request.domain.isascii()
    assert idna.decode(request.domain) == idna.decode(expected)


def test_a_contact_on_an_internationalised_domain_is_kept_in_punycode():
    request = OnboardingRequest(
        **{**VALID, "domain": "münchen.de", "contact_email": "anna@münchen.de"}
    )
    assert request.contact_email == "anna@xn--mnchen-3ya.de"


def test_an_overlong_email_is_refused_naming_its_field():
    with pytest.raises(ValidationError) as caught:
        OnboardingRequest(**{**VALID, "contact_email": "a" * 250 + "@acme.example"})
    assert refused_field(caught.value) == {"contact_email"}
