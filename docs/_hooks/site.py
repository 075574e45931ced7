"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

- ``<!-- cli-reference -->`` on a page becomes the CLI reference, generated from the Typer app
  itself (``typer.main.get_command(contextedit.cli:app)``): every command's usage, help, and
  options with their help and defaults, exactly as ``--help`` gives them.
- ``<!-- BENCHMARKS.md: TITLE -->`` becomes the ``## TITLE`` section of BENCHMARKS.md (the file
  the bench scripts' ``--update-docs`` rewrite), its subheadings one level up and its relative
  links made relative to the page, so each figure lives in one file only.
- ``<!-- bench-results -->`` becomes a table of ``bench/results/*.json``, each with the command
  it records having run it.
- The images of ``examples/`` and ``bench/results/`` are copied into the site at the same paths,
  with no copy in docs/. Pages link to them as files on disk (``../examples/edit-example.gif``
  from docs/getting-started.md), which GitHub follows; the hook takes one ``../`` off such a
  link, which the site follows.

A missing section or a command that does not import fails the build.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ("examples/*.gif", "examples/*.png", "bench/results/*.png")
ASSET_FOLDERS = ("examples/", "bench/results/")
CLI_MARK = "<!-- cli-reference -->"
RESULTS_MARK = "<!-- bench-results -->"
BENCH_MARK = re.compile(r"<!-- BENCHMARKS\.md: (.+?) -->")
RELATIVE_LINK = re.compile(r"(\]\()(?![a-z]+:|#|/)([^)\s]+)")


def on_files(files, config):
    for pattern in ASSETS:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    up = "../" * page.file.src_uri.count("/")
    for folder in ASSET_FOLDERS:  # a link out of docs/ to an asset: the same asset inside the site
        markdown = markdown.replace(f"]({up}../{folder}", f"]({up}{folder}")
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_reference())
    if RESULTS_MARK in markdown:
        markdown = markdown.replace(RESULTS_MARK, results_table())
    return BENCH_MARK.sub(lambda m: benchmarks_section(m.group(1), up), markdown)


# BENCHMARKS.md sections -------------------------------------------------------------------


def benchmarks_section(title: str, up: str) -> str:
    """The body of BENCHMARKS.md's ``## title`` (up to the next ``## ``), headings raised by one."""
    lines = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8").splitlines()
    body, inside, fenced = [], False, False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        heading = not fenced and re.match(r"#+ ", line)
        if heading and line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip() == title
            continue
        if inside:
            if heading and line.startswith("###"):
                line = line[1:]
            body.append(line if fenced else RELATIVE_LINK.sub(lambda m: m.group(1) + up + m.group(2), line))
    if not inside:
        raise PluginError(f"BENCHMARKS.md has no section '## {title}'")
    return "\n".join(body).strip() + "\n"


def results_table() -> str:
    """One row per ``bench/results/*.json``: its name and the ``command`` it records (if any)."""
    import json

    rows = ["| file | recorded command |", "|---|---|"]
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        try:
            command = json.loads(path.read_text(encoding="utf-8")).get("command")
        except (ValueError, AttributeError) as exc:
            raise PluginError(f"{path} is not a JSON object: {exc}") from exc
        shown = f"`{command.strip()}`" if isinstance(command, str) and command.strip() else "—"
        rows.append(f"| `bench/results/{path.name}` | {shown.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


# The CLI reference ------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Help text as Markdown table-cell text: code spans kept, <, >, &, | and * escaped outside them."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = html.escape(parts[i], quote=False).replace("|", "\\|").replace("*", "\\*")
    return "`".join(parts)


def _paragraphs(text: str | None) -> str:
    text = "\n".join(line for line in (text or "").splitlines() if line.strip() != "\b")
    return "\n\n".join(_escape(p.strip()) for p in re.split(r"\n\s*\n", text) if p.strip())


def _table(command, ctx) -> list[str]:
    rows = []
    for param in command.params:
        record = None if getattr(param, "hidden", False) else param.get_help_record(ctx)
        if record:
            names, help_text = record
            rows.append(f"| `{names}` | {_escape(help_text)} |")
    return ["| argument / option | what it does |", "|---|---|", *rows] if rows else []


def cli_reference() -> str:
    import typer

    try:
        from contextedit.cli import app
    except Exception as exc:  # noqa: BLE001 — any import failure is a build failure with its reason
        raise PluginError(f"the CLI reference needs contextedit.cli to import: {exc!r}") from exc
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="contextedit")
    out = [_paragraphs(group.help), "", *_table(group, ctx), ""]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = command.context_class(command, info_name=name, parent=ctx)
        usage = command.get_usage(sub).removeprefix("Usage: ")
        out += [f"## `contextedit {name}`", "", _paragraphs(command.help), "", "```text", usage, "```", "",
                *_table(command, sub), ""]
    return "\n".join(out)
