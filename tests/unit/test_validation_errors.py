"""A pydantic ValidationError in words: per field for the intake, on one line for refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, field_validator

from shared.model import OnboardingRequest, ToolCall
from shared.validation_errors import field_errors, one_line


class Contact(BaseModel):
    email: str = Field(pattern=r"^[^@]+@[^@]+$")

    @field_validator("email")
    @classmethod
    def not_ours(cls, value: str) -> str:
        if value.endswith("@chimera.example"):
            raise ValueError("our own address cannot be a contact")
        return value


class Team(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=1)
    contacts: list[Contact] = []


def refusal(model: type[BaseModel], value: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(value)
    return caught.value


def test_each_refused_field_is_named_by_its_dotted_path_when_nested() -> None:
    exc = refusal(Team, {"name": "", "size": 0, "contacts": [{"email": "x@y"}, {"email": "no"}]})

    errors = field_errors(exc)

    assert set(errors) == {"name", "size", "contacts.1.email"}
    assert all(errors.values())


def test_a_validators_own_words_come_without_pydantics_prefix_when_it_raised_value_error() -> None:
    exc = refusal(Contact, {"email": "bot@chimera.example"})

    assert field_errors(exc) == {"email": "our own address cannot be a contact"}
    assert one_line(exc) == "email: our own address cannot be a contact"


def test_the_value_itself_is_called_whole_when_it_is_not_an_object() -> None:
    exc = refusal(Team, ["not", "an", "object"])

    assert list(field_errors(exc)) == ["body"]
    assert one_line(exc, whole="value").startswith("value: ")


@given(bad=st.integers(min_value=1, max_value=30))
def test_one_line_keeps_the_first_five_when_there_are_more(bad: int) -> None:
    exc = refusal(Team, {"name": "t", "size": 1, "contacts": [{"email": "no"}] * bad})

    line = one_line(exc)

    assert "\n" not in line
    assert line.count("; ") == min(bad, 5) - 1
    assert line.split("; ")[0].startswith("contacts.0.email: ")
    assert len(field_errors(exc)) == bad  # the per-field form keeps every one


@given(
    payload=st.dictionaries(
        st.sampled_from(["run_id", "step_id", "tool", "generation", "args", "inputs", "extra"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers())),
    )
)
def test_every_error_pydantic_reports_appears_in_both_forms_when_the_payload_is_anything(
    payload: dict[str, object],
) -> None:
    try:
        ToolCall.model_validate(payload)
    except ValidationError as exc:
        errors = field_errors(exc)
        line = one_line(exc, most=100)
        for where, why in errors.items():
            assert f"{where}: {why}" in line
        assert {".".join(map(str, e["loc"])) or "body" for e in exc.errors()} == set(errors)


def test_the_intakes_refusal_names_the_field_in_a_persons_words_when_the_domain_is_bad() -> None:
    exc = refusal(
        OnboardingRequest,
        {"company_name": "Acme", "domain": "not a domain", "contact_email": "j@acme.com"},
    )

    errors = field_errors(exc)

    assert "domain" in errors and not errors["domain"].startswith("Value error")
