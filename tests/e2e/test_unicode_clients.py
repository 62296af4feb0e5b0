"""Clients whose names are not ASCII, on internationalised domains, onboarded end to end."""

from __future__ import annotations

import pytest

from sandbox.effects import side_effects
from sandbox.records import RecordStore
from shared.model import RunStatus
from tests.e2e.conftest import ONE_ONBOARDING, body, submit, wait_until_settled

pytestmark = pytest.mark.slow

CLIENTS = [
    ("Zürich Rückversicherung AG", "zürich-rück.ch", "anna@zürich-rück.ch"),
    ("東京エレクトロン", "東京.jp", "tanaka@東京.jp"),
    ("Rocket 🚀 Labs", "xn--mnchen-3ya.de", "max@xn--mnchen-3ya.de"),
    ("Пример Групп", "пример.рф", "ivan@пример.рф"),
]


def test_unicode_names_and_internationalised_domains_onboard_end_to_end(start_stack, tmp_path):
    stack = start_stack(local_backoff_scale=0.1)
    answers = [
        submit(stack, body(company_name=name, domain=domain, contact_email=email))
        for name, domain, email in CLIENTS
    ]
    assert [status for status, _ in answers] == [202] * len(CLIENTS)
    run_ids = [answer["run_id"] for _, answer in answers]
    runs = wait_until_settled(stack, run_ids, timeout=120)

    assert {r.status for r in runs.values()} == {RunStatus.SUCCEEDED}, [
        r.reason for r in runs.values()
    ]
    effects = side_effects(tmp_path / "home")
    assert all(effects[r] == ONE_ONBOARDING for r in run_ids)
    records = RecordStore(tmp_path / "home")
    for (name, _, _), run_id in zip(CLIENTS, run_ids, strict=True):
        run = runs[run_id]
        assert run.request.company_name == name and run.request.domain.isascii()
        sent = {r["action"]: r["request"] for r in records.list(run_id=run_id)}
        # The name reaches every vendor intact; the address in the form DNS and SMTP use.
        assert name in sent["project.create"]["name"]
        assert sent["mail.send"]["personalizations"][0]["to"][0]["email"] == (
            run.request.contact_email
        )
        assert name in sent["chat.postMessage"]["text"]
