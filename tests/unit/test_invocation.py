"""The commands the CLI prints work when pasted: as it was called, on the same store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chimera.invocation import command, program
from shared.settings import Settings


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_fresh_clone_calls_the_virtualenv_script_by_its_path(tmp_path, monkeypatch):
    _script(tmp_path / ".venv" / "bin" / "chimera")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert program(".venv/bin/chimera", tmp_path) == ".venv/bin/chimera"
    assert program(str(tmp_path / ".venv/bin/chimera"), tmp_path) == ".venv/bin/chimera"
    assert program(str(tmp_path / ".venv/bin/chimera"), tmp_path / "elsewhere") == str(
        tmp_path / ".venv/bin/chimera"
    )


def test_an_activated_virtualenv_calls_chimera_by_name(tmp_path, monkeypatch):
    script = _script(tmp_path / ".venv" / "bin" / "chimera")
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}/usr/bin")
    assert program(str(script), tmp_path) == "chimera"


def test_a_script_in_the_current_directory_is_called_with_its_dot(tmp_path, monkeypatch):
    _script(tmp_path / "chimera")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert program(str(tmp_path / "chimera"), tmp_path) == "./chimera"


def test_another_way_in_is_named_chimera(tmp_path):
    assert program("/usr/lib/python3/site-packages/pytest/__main__.py", tmp_path) == "chimera"
    assert program("-m", tmp_path) == "chimera"


def test_the_home_and_state_url_are_named_when_they_are_not_the_defaults():
    assert command(Settings(), "runs", "list").endswith("runs list")
    assert "CHIMERA_HOME" not in command(Settings(), "runs", "list")
    elsewhere = command(Settings(home=Path("/tmp/a home")), "runs", "show", "run-1")
    assert elsewhere.startswith("CHIMERA_HOME='/tmp/a home' ") and elsewhere.endswith(
        "runs show run-1"
    )
    remote = command(Settings(state_url="sqlite:///tmp/x.db"), "runs", "list")
    assert remote.startswith("CHIMERA_STATE_URL=sqlite:///tmp/x.db ")
