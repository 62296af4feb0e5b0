"""Imports point inward: tools and the orchestrator depend on `shared/`, never on each other,
and `shared/` on neither. Read statically (ast), imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
# What each production layer must never import (tests, bench, chimera and the sandbox may).
FORBIDDEN = {
    "shared": {"orchestrator", "tools", "chimera", "sandbox", "tests", "bench"},
    "orchestrator": {"tools", "chimera", "sandbox", "tests", "bench"},
    "tools": {"orchestrator", "chimera", "sandbox", "tests", "bench"},
}
TOOLS = ("clearbit", "jira", "sendgrid", "slack")
# Known violations, for the lead to mend at merge: path -> why it is allowed to fail for now.
KNOWN: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module `source` (the text of `module`) may import: `import a.b`, `from a import
    b` (a, and a.b in case b is a module), relative forms resolved, at any depth, and
    `importlib.import_module("a")` with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and _called(node.func) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return {name for name in names if name}


def _called(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def violations(module: str, names: set[str]) -> list[str]:
    """The imports of `module` that point the wrong way."""
    layer = module.split(".")[0]
    if layer not in FORBIDDEN:
        return []
    own_tool = ".".join(module.split(".")[:2]) if layer == "tools" else ""
    wrong = []
    for name in sorted(names):
        top = name.split(".")[0]
        # Another tool: tools.<y>... where y is not this module's own tool.
        in_tools = top == "tools" and name != "tools"
        other_tool = in_tools and ".".join(name.split(".")[:2]) != own_tool
        if top in FORBIDDEN[layer] or (layer == "tools" and other_tool):
            wrong.append(name)
    return wrong


def production_modules() -> list[Path]:
    return sorted(p for layer in FORBIDDEN for p in (ROOT / layer).rglob("*.py"))


def _case(path: Path):  # type: ignore[no-untyped-def]
    relative = str(path.relative_to(ROOT))
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN[relative])] if relative in KNOWN else []
    return pytest.param(path, id=relative, marks=marks)


@pytest.mark.parametrize("path", [_case(p) for p in production_modules()])
def test_module_imports_point_inward(path: Path):
    name = module_name(path)
    names = imported(path.read_text(), name, is_package=path.name == "__init__.py")
    assert violations(name, names) == [], f"{path.relative_to(ROOT)} imports outward"


def test_every_deployed_folder_is_walked():
    walked = {str(p.relative_to(ROOT)) for p in production_modules()}
    expected = {"shared/runtime.py", "orchestrator/main.py", "orchestrator/core.py"}
    expected |= {f"tools/{tool}/{f}.py" for tool in TOOLS for f in ("main", "core", "client")}
    assert expected <= walked
    assert not {p for p in KNOWN if p not in walked}, "a known violation names no module"


STYLES = {
    "import": "import {target}",
    "from": "from {target} import thing",
    "from-package": "from {package} import {leaf}",
    "in-function": "def later():\n    import {target}\n",
    "in-method": "class A:\n    def m(self):\n        from {target} import thing\n",
    "import-module": "import importlib\nimportlib.import_module('{target}')",
}


@st.composite
def outward_imports(draw):  # type: ignore[no-untyped-def]
    """(importing module, its source) where the source imports something it must not."""
    layer = draw(st.sampled_from(sorted(FORBIDDEN)))
    own = draw(st.sampled_from(TOOLS))
    module = draw(st.sampled_from([f"{layer}.core", f"{layer}.main"]))
    if layer == "tools":
        module = f"tools.{own}.{draw(st.sampled_from(['core', 'main', 'client']))}"
    banned = sorted(FORBIDDEN[layer])
    if layer == "tools":
        banned += [f"tools.{t}" for t in TOOLS if t != own]
    top = draw(st.sampled_from(banned))
    target = f"{top}.{draw(st.sampled_from(['core', 'main', 'client', 'server']))}"
    package, _, leaf = target.rpartition(".")
    source = STYLES[draw(st.sampled_from(sorted(STYLES)))].format(
        target=target, package=package, leaf=leaf
    )
    return module, source


@given(outward_imports())
def test_an_outward_import_is_found_whatever_its_form(case):
    module, source = case
    assert violations(module, imported(source, module))


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("tools.slack.main", "from tools.slack import core\nfrom shared.runtime import runtime"),
        ("tools.slack.main", "from . import core\nfrom .client import SlackChat"),
        ("tools.jira.core", "import requests\nfrom jira import JIRA\nimport json"),
        ("orchestrator.service", "from orchestrator import core\nfrom shared import model"),
        ("shared.runtime", "def later():\n    from shared.local_queue import LocalTaskQueue"),
        ("chimera.stack", "from tools.slack import main\nfrom sandbox.server import Server"),
    ],
)
def test_inward_imports_pass(module, source):
    assert violations(module, imported(source, module)) == []


def test_relative_imports_resolve_against_their_package():
    assert "tools.jira.core" in imported("from ...jira import core", "tools.slack.x.main")
    assert violations("tools.slack.main", imported("from ..jira import core", "tools.slack.main"))
    assert "shared.model" in imported("from .model import X", "shared", is_package=True)
