"""The shared guard, over generated addresses and links: the orchestrator's injection scan, its
plan check and the drafting tool's review see the same foreign targets, and never the
client's own."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from orchestrator import planning
from orchestrator.agent import validation
from shared import guard
from tests.conftest import make_request, make_run
from tools.sendgrid import drafting

REQUEST = make_request()  # ada@acme.example, acme.example, #client-onboarding
PLAN = planning.default_plan(make_run())
DRAFT = next(s for s in PLAN if s.step_id == "draft")

# Labels as people and attackers write them: ASCII, accented and non-Latin letters, digits.
LETTERS = string.ascii_lowercase + "éüßøçñдж"
labels = st.text(LETTERS + string.digits, min_size=1, max_size=12).filter(
    lambda label: label[0] not in string.digits
)
tlds = st.one_of(st.text(LETTERS, min_size=2, max_size=6), labels.map(lambda label: "xn--" + label))
hosts = st.builds(
    lambda parts, tld: ".".join([*parts, tld]), st.lists(labels, min_size=1, max_size=3), tlds
)
foreign_hosts = hosts.filter(
    lambda host: host != REQUEST.domain and not host.endswith("." + REQUEST.domain)
)
locals_ = st.lists(
    st.text(LETTERS + string.digits + "+", min_size=1, max_size=10), min_size=1, max_size=3
).map(".".join)
words = st.lists(
    st.sampled_from(["Hello", "team", "see", "our", "goal:", "roll", "out"]), max_size=4
).map(" ".join)
schemes = st.sampled_from(["https", "http", "ftp", "s3", "javascript", "custom+scheme"])


@given(words, locals_, foreign_hosts, words)
def test_a_foreign_address_is_found_by_the_scan_and_the_draft_guard_alike(
    before, local, host, after
):
    address = f"{local}@{host}"
    text = f"{before} {address} {after}".strip()

    scanned = guard.scan([("goal", text)], REQUEST)
    assert {"kind": "email", "text": address, "where": "goal"} in scanned
    assert address in guard.foreign_targets(REQUEST, plain=[text])


@given(words, schemes, foreign_hosts, st.sampled_from(["", "/", "/setup?x=1", ":8443/a"]))
def test_a_link_to_another_host_is_found_in_any_scheme(before, scheme, host, rest):
    link = f"{scheme}://{host}"
    text = f"{before} {link}{rest}".strip()

    assert any(f["kind"] == "url" and f["text"] == link for f in guard.scan([("t", text)], REQUEST))
    assert host in guard.foreign_targets(REQUEST, plain=[text])


@given(
    st.lists(labels, max_size=2),
    schemes,
    st.sampled_from(["", ".", "\u3002"]),
    st.sampled_from(["", "/", "/pricing"]),
)
def test_the_clients_own_hosts_and_contact_are_never_foreign(subdomains, scheme, stop, rest):
    host = ".".join([*subdomains, REQUEST.domain]) + stop
    text = f"Write to {REQUEST.contact_email} or see {scheme}://{host}{rest}"

    assert guard.scan([("t", text)], REQUEST) == []
    assert guard.foreign_targets(REQUEST, plain=[text]) == []


@given(locals_, foreign_hosts)
def test_a_plan_and_a_draft_naming_a_foreign_address_are_both_refused(local, host):
    address = f"{local}@{host}"
    highlighted = DRAFT.model_copy(update={"args": {"highlights": [f"cc {address}"]}})
    plan_errors = validation.check_args(highlighted, REQUEST)
    assert any(address in e and "is not the request's" in e for e in plan_errors), plan_errors
    assert validation.hostile_refusal(plan_errors)

    email = {
        "subject": "Welcome!",
        "text": f"Hello Ada, write to {address}.",
        "html": "<p>Hello Ada, welcome aboard.</p>",
    }
    verdict = drafting.review(email, REQUEST)
    assert verdict.email is None and verdict.hostile
    assert any(address in reason for reason in verdict.reasons)


def test_strings_names_where_each_string_is():
    value = {"company": {"description": "d", "tags": ["a", "b"]}, "found": True, "n": 3}
    assert guard.strings(value) == [
        ("company.description", "d"),
        ("company.tags[0]", "a"),
        ("company.tags[1]", "b"),
    ]


def test_the_contact_of_a_client_under_a_punycode_tld_is_not_foreign():
    request = make_request(domain="acme.xn--p1ai", contact_email="ada@acme.xn--p1ai")
    text = "Write to ada@acme.xn--p1ai, see https://www.acme.xn--p1ai/start"
    assert guard.scan([("goal", text)], request) == []
    assert guard.foreign_targets(request, plain=[text]) == []
