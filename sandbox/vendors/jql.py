"""The slice of JQL the sandbox understands: AND-ed clauses on a few fields, ORDER BY."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN_RE = re.compile(
    r"""\s*(?:("(?:[^"\\]|\\.)*")|('(?:[^'\\]|\\.)*')|(!=|=|~|\(|\)|,)|([^\s=!~(),"']+))"""
)
FIELDS = ("project", "labels", "key", "issuetype", "status", "summary")
_OPERATORS = {
    "project": ("=", "!=", "in"),
    "labels": ("=", "!=", "in"),
    "key": ("=", "!=", "in"),
    "issuetype": ("=", "!=", "in"),
    "status": ("=", "!=", "in"),
    "summary": ("~",),
}


class JqlError(ValueError):
    """The query is not JQL the sandbox can answer; the message reads like Jira's."""


@dataclass(frozen=True)
class Clause:
    field: str
    operator: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    clauses: tuple[Clause, ...]
    order_by: tuple[tuple[str, bool], ...] = ()  # (field, descending)


def parse_jql(jql: str) -> Query:
    tokens = _tokenize(jql)
    clauses: list[Clause] = []
    position = 0
    order_by: list[tuple[str, bool]] = []
    while position < len(tokens):
        word = tokens[position].lower()
        if word == "order":
            order_by, position = _order_by(tokens, position)
            break
        if clauses:
            if word != "and":
                raise JqlError(
                    "Error in the JQL Query: the sandbox supports only AND, "
                    f"found '{tokens[position]}'."
                )
            position += 1
        clause, position = _clause(tokens, position)
        clauses.append(clause)
    return Query(clauses=tuple(clauses), order_by=tuple(order_by))


def _tokenize(jql: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = jql.strip()
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if not match or match.end() == position:
            raise JqlError(f"Error in the JQL Query: unexpected text at character {position}.")
        double, single, symbol, word = match.groups()
        if double is not None:
            tokens.append("\0" + _unescape(double[1:-1]))
        elif single is not None:
            tokens.append("\0" + _unescape(single[1:-1]))
        else:
            tokens.append(symbol or word)
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return tokens


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _literal(token: str) -> str:
    # Quoted strings carry a NUL marker so a quoted "AND" is never read as a keyword.
    return token[1:] if token.startswith("\0") else token


def _clause(tokens: list[str], position: int) -> tuple[Clause, int]:
    if position + 1 >= len(tokens):
        raise JqlError("Error in the JQL Query: Expecting a field, an operator and a value.")
    field = _literal(tokens[position]).lower()
    if field not in FIELDS:
        raise JqlError(
            f"Error in the JQL Query: Field '{_literal(tokens[position])}' is not supported "
            f"by the sandbox (supported: {', '.join(FIELDS)})."
        )
    operator = tokens[position + 1].lower()
    if operator not in _OPERATORS[field]:
        raise JqlError(
            f"Error in the JQL Query: The operator '{tokens[position + 1]}' is not supported "
            f"for the '{field}' field by the sandbox."
        )
    position += 2
    if operator == "in":
        if position >= len(tokens) or tokens[position] != "(":
            raise JqlError("Error in the JQL Query: Expecting '(' after 'in'.")
        values: list[str] = []
        position += 1
        while position < len(tokens) and tokens[position] != ")":
            if tokens[position] != ",":
                values.append(_literal(tokens[position]))
            position += 1
        if position >= len(tokens):
            raise JqlError("Error in the JQL Query: Expecting ')' to close the list.")
        return Clause(field, operator, tuple(values)), position + 1
    if position >= len(tokens):
        raise JqlError(f"Error in the JQL Query: Expecting a value after '{operator}'.")
    return Clause(field, operator, (_literal(tokens[position]),)), position + 1


def _order_by(tokens: list[str], position: int) -> tuple[list[tuple[str, bool]], int]:
    if position + 1 >= len(tokens) or tokens[position + 1].lower() != "by":
        raise JqlError("Error in the JQL Query: Expecting 'by' after 'order'.")
    position += 2
    order: list[tuple[str, bool]] = []
    while position < len(tokens):
        field = _literal(tokens[position]).lower()
        descending = False
        position += 1
        if position < len(tokens) and tokens[position].lower() in ("asc", "desc"):
            descending = tokens[position].lower() == "desc"
            position += 1
        order.append((field, descending))
        if position < len(tokens) and tokens[position] == ",":
            position += 1
    return order, position
