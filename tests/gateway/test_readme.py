"""The README documents every setting the gateway reads, and its set-up commands are the ones CI runs."""

from __future__ import annotations

import re

from pydantic import AliasChoices

from gateway.settings import Settings
from tests.support import REPO


def env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        if field.alias:
            names.append(field.alias)
        elif isinstance(field.validation_alias, AliasChoices):
            names.append(str(field.validation_alias.choices[0]))
        else:
            names.append(name.upper())
    return names


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Architecture")]
    missing = [n for n in env_names() if f"`{n}`" not in table]
    assert not missing, f"README's configuration table lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme[: readme.index("## Walk-through")])
    assert len(commands) == 2, commands
    assert "voice-gateway serve" in commands[0]
    assert commands[1] in (REPO / ".ci" / "run").read_text()
