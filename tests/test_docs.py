"""The contracts live in the project: docs/reference.md names every command and flag, and nothing
in the repository points outside it (no design documents the repository does not contain)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click

from clipdex.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out.update(_commands(cmd, f"{prefix}{name} "))
        else:
            out[prefix + name] = cmd
    return out


def _synopsis(text: str) -> dict[str, str]:
    """Each command's entry in the reference's synopsis block (continuation lines included)."""
    block = text.split("## Commands", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            words = line.split()
            name = " ".join(words[:2]) if words[0] == "model" else words[0]
            entries[name] = entries.get(name, "") + " " + line
        elif name is not None:
            entries[name] += " " + line
    return entries


def test_reference_names_every_command_and_flag() -> None:
    entries = _synopsis(REFERENCE.read_text(encoding="utf-8"))
    missing = []
    for name, cmd in sorted(_commands(cli).items()):
        entry = entries.get(name)
        if entry is None:
            missing.append(name)
            continue
        for param in cmd.params:
            if isinstance(param, click.Option):
                flags = [f for f in param.opts + param.secondary_opts if f not in ("-h", "--help")]
                if not any(f"{f} " in entry or f"{f}]" in entry for f in flags):
                    missing.append(f"{name} {'/'.join(flags)}")
    assert missing == []


def test_readme_points_at_the_reference() -> None:
    assert "docs/reference.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_nothing_cites_documents_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    citing = []
    for name in files:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".toml", ".txt", ".cfg") or path.name == "test_docs.py":
            continue
        if path.is_file() and "DESIGN.md" in path.read_text(encoding="utf-8", errors="replace"):
            citing.append(name)
    assert citing == []
