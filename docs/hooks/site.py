"""MkDocs hooks of bayesgen's site: the repository's BENCHMARKS.md and CONTRIBUTING.md become
pages, and the command-line reference is generated from the option specs the parser uses."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"benchmarks.md": "BENCHMARKS.md", "contributing.md": "CONTRIBUTING.md"}
MARKER = "<!-- bayesgen-cli-reference -->"


def _root_page(text: str) -> str:
    """A root Markdown file as a page of docs/: links into docs/ lose the prefix, links to
    the other root pages point at their pages, links to code stay text."""
    text = text.replace("](docs/", "](")
    for page, name in PAGES.items():
        text = text.replace(f"]({name}", f"]({page}")
    text = re.sub(r"\]\(README\.md(#[^)]*)?\)", "](index.md)", text)
    return text


def on_files(files, config):
    for page, name in PAGES.items():
        files.append(File.generated(config, page,
                                    content=_root_page((ROOT / name).read_text())))
    return files


def cli_reference() -> str:
    """Every command's and subcommand's ``--help`` text, as the CLI prints it."""
    from bayesgen.cli import COMMANDS
    from bayesgen.cli.options import help_text

    parts = []
    for name, command in COMMANDS.items():
        progs = ([(f"bayesgen {name} {s}", sub) for s, sub in command.subcommands.items()]
                 if command.subcommands else [(f"bayesgen {name}", command)])
        for prog, cmd in progs:
            parts += [f"### `{prog}`", "", "```text", help_text(cmd, prog).rstrip(), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    return markdown
