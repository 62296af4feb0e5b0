"""How to call `chimera` again from here, as the person just did: the commands it prints must
work when pasted, on a fresh clone (`.venv/bin/chimera`) as in an activated virtualenv."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from shared.settings import Settings

PROGRAM = "chimera"
DEFAULT_HOME = Settings.model_fields["home"].default


def program(argv0: str | None = None, cwd: Path | None = None) -> str:
    """`chimera` when that is what the shell finds, else the script's path as it was called
    (relative to `cwd` when under it); `chimera` too when run another way (python -m)."""
    here = Path(os.path.abspath(cwd or Path.cwd()))
    called = Path(os.path.normpath(here / (argv0 if argv0 is not None else sys.argv[0])))
    if called.name != PROGRAM or not called.is_file():
        return PROGRAM
    found = shutil.which(PROGRAM)
    if found and os.path.samefile(found, called):
        return PROGRAM
    if not called.is_relative_to(here):
        return str(called)
    relative = called.relative_to(here)
    return str(relative) if relative.parent != Path(".") else f"./{relative}"


def command(settings: Settings, *words: str) -> str:
    """A `chimera` command line that reads the same store: the home (and state URL) named
    when they are not the defaults, since a bare `chimera` would read another one."""
    env = []
    if Path(settings.home) != Path(DEFAULT_HOME):
        env.append(f"CHIMERA_HOME={shlex.quote(str(settings.home))}")
    if settings.state_url:
        env.append(f"CHIMERA_STATE_URL={shlex.quote(settings.state_url)}")
    return " ".join([*env, shlex.quote(program()), *(shlex.quote(w) for w in words)])
