"""The documentation says what the program does, where a machine can check it (issue 23).

* Every command line in a fenced code block of ``README.md`` and ``docs/*.md`` (a line that
  starts with ``depthstream ``, ``python cli.py `` or ``python -m stream ``, joined across
  trailing-backslash continuations, cut at ``&&``, ``;`` and ``|``, ``# comments`` dropped)
  and in the ``Usage:`` section of each ``samples/*.py`` docstring is accepted by
  :func:`stream.cli_args.build_parser`: ``parse_args`` must not exit. A line with a
  ``<placeholder>`` cannot be parsed; such lines are skipped only if listed in
  :data:`PLACEHOLDER_LINES` (none are: write a concrete example instead).
* The allowed-imports table of ``docs/how-it-works.md`` is ``ALLOWED`` of
  ``tests/test_architecture.py``, the table the architecture test enforces.
* README's set-up and test commands are the ones ``.ci/run`` runs; every link between the
  pages leads to a file and, with ``#anchor``, to a heading there.
* One figure, one value: each figure in :data:`FIGURES` is found by its patterns wherever
  the pages quote it, and every quotation has the same value (and, for the input sizes, the
  model registry's). A figure quoted once may still be listed, so a second quotation is
  caught when it is written.

Starts no threads; reads the pages and the samples, writes nothing.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.cli_args import build_parser
from stream.models.registry import DAV2_SMALL_SPEC, MIDAS_SMALL_SPEC

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SAMPLES = sorted((ROOT / "samples").glob("*.py"))

#: How a command line starts (the words before the sub-command).
PREFIXES = (("depthstream",), ("python", "cli.py"), ("python", "-m", "stream"))
#: Lines with ``<...>`` placeholders that may stay unparsed (exact text, joined); keep empty.
PLACEHOLDER_LINES: frozenset[str] = frozenset()
#: Code blocks in these languages hold no shell commands.
NOT_SHELL = {"python", "py", "json", "yaml", "toml"}
_OPERATORS = {"&&", "||", ";", "|", "&", ";;"}
_PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Command:
    """One command line of the documentation: where it is, its text and its arguments."""

    where: str
    text: str
    argv: tuple[str, ...] | None  # None: a line with placeholders, skipped

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


# --------------------------------------------------------------------------- extraction


def code_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """Fenced code blocks of a Markdown text: ``(first line number, language, lines)``."""
    blocks: list[tuple[int, str, list[str]]] = []
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        match = _FENCE.match(lines[k])
        if match is None:
            k += 1
            continue
        fence, language, start = match.group(2), match.group(3).lower(), k + 2
        body: list[str] = []
        k += 1
        while k < len(lines) and not lines[k].strip().startswith(fence):
            body.append(lines[k])
            k += 1
        blocks.append((start, language, body))
        k += 1
    return blocks


def logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """Lines joined across trailing backslashes: ``(line number, text)``."""
    joined: list[tuple[int, str]] = []
    pending: list[str] = []
    start = first
    for number, line in enumerate(lines, first):
        if not pending:
            start = number
        stripped = line.strip()
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        joined.append((start, " ".join([*pending, stripped]).strip()))
        pending = []
    if pending:
        joined.append((start, " ".join(pending)))
    return joined


def commands_in_line(where: str, line: str) -> list[Command]:
    """The depthstream commands of one shell line (several when joined by ``&&``, ``;``...)."""
    line = line.removeprefix("$ ").strip()
    if not _mentions_command(line):
        return []
    if _PLACEHOLDER.search(line):
        return [Command(where, line, None)]
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segment: list[str] = []
    found: list[Command] = []
    for token in [*lexer, ";"]:
        if token not in _OPERATORS:
            segment.append(token)
            continue
        while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[0]):
            segment.pop(0)  # VAR=value before a command
        for prefix in PREFIXES:
            if _starts_command(segment, prefix):
                found.append(Command(where, line, tuple(segment[len(prefix):])))
                break
        segment = []
    return found


def _starts_command(words: list[str], prefix: tuple[str, ...]) -> bool:
    return tuple(words[:len(prefix)]) == prefix and len(words) > len(prefix)


def _mentions_command(line: str) -> bool:
    return any(re.search(rf"(^|[\s;&|]){re.escape(' '.join(p))} ", line) for p in PREFIXES)


def commands_in_markdown(text: str, name: str) -> list[Command]:
    """Every command line in the code blocks of a Markdown page."""
    found: list[Command] = []
    for first, language, body in code_blocks(text):
        if language in NOT_SHELL:
            continue
        for number, line in logical_lines(body, first):
            found += commands_in_line(f"{name}:{number}", line)
    return found


def commands_in_sample(path: Path) -> list[Command]:
    """The command lines of a sample's ``Usage:`` section (its module docstring)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    lines = doc.splitlines()
    if "Usage:" not in [line.strip() for line in lines]:
        return []
    start = [line.strip() for line in lines].index("Usage:") + 1
    body: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line.startswith((" ", "\t")):
            break  # the next section
        body.append(line)
    name = path.relative_to(ROOT).as_posix()
    found: list[Command] = []
    for number, line in logical_lines(body, start + 1):
        found += commands_in_line(f"{name} (docstring line {number})", line)
    return found


def all_commands() -> list[Command]:
    found: list[Command] = []
    for page in PAGES:
        found += commands_in_markdown(page.read_text(encoding="utf-8"),
                                      page.relative_to(ROOT).as_posix())
    for sample in SAMPLES:
        found += commands_in_sample(sample)
    return found


def parse_error(argv: tuple[str, ...]) -> str | None:
    """``None`` if the parser accepts ``argv``, else argparse's complaint (one line)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(list(argv))
        except SystemExit as exc:
            if exc.code == 0 and ({"-h", "--help"} & set(argv)):
                return None  # a help request is a valid command
            lines = err.getvalue().strip().splitlines()
            return lines[-1] if lines else f"exit status {exc.code}"
    return None


COMMANDS = all_commands()


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.argv is not None], ids=str)
def test_documented_command_is_accepted_by_the_parser(command: Command) -> None:
    error = parse_error(command.argv)
    assert error is None, f"{command}\n  the parser says: {error}"


def test_commands_were_found_in_every_place_that_shows_them() -> None:
    where = [c.where.split(":")[0].split(" ")[0] for c in COMMANDS]
    assert where.count("README.md") >= 6
    assert sum(w.startswith("docs/") for w in where) >= 30
    for page in ("docs/commands.md", "docs/robotics.md", "docs/batch.md", "docs/web.md"):
        assert page in where, f"no command found in {page}"
    for sample in ("samples/zmq_subscriber.py", "samples/read_rosbag.py"):
        assert sample in where, f"no usage line found in {sample}"


def test_lines_with_placeholders_are_only_the_listed_ones() -> None:
    skipped = {c.text for c in COMMANDS if c.argv is None}
    assert skipped <= PLACEHOLDER_LINES, (
        "command lines with <placeholders> cannot be checked; write a concrete example:\n"
        + "\n".join(str(c) for c in COMMANDS if c.argv is None and c.text in skipped))


def test_a_wrong_command_is_caught() -> None:
    """The check itself: the usage line issue 23 found broken fails, its fix passes."""
    page = ("Text\n\n```bash\n"
            "depthstream live 0 --zmq tcp://0.0.0.0:5555   # on the camera's machine\n"
            "depthstream convert samples/clip.mp4 \\\n    -o out.mp4 --layuot side\n"
            "```\n\n```python\ndepthstream = 1\n```\n")
    found = commands_in_markdown(page, "page.md")
    assert [c.where for c in found] == ["page.md:4", "page.md:5"]
    assert found[1].argv == ("convert", "samples/clip.mp4", "-o", "out.mp4", "--layuot", "side")
    assert "unrecognized arguments: 0" in parse_error(found[0].argv)
    assert "unrecognized arguments: --layuot side" in parse_error(found[1].argv)
    assert parse_error(("live", "--camera", "0", "--zmq", "tcp://0.0.0.0:5555")) is None


def test_shell_lines_are_split_and_prefixed_commands_found() -> None:
    line = ("cd /tmp && DEPTHSTREAM_WEIGHTS=w.pt python cli.py info --json | jq . ; "
            "python -m stream image a.png # a comment")
    argvs = [c.argv for c in commands_in_line("x", line)]
    assert argvs == [("info", "--json"), ("image", "a.png")]
    assert commands_in_line("x", "ros2 bag play clip_bag") == []
    assert commands_in_line("x", "depthstream: error: output exists") == []
    assert commands_in_line("x", "depthstream image <picture>")[0].argv is None


def test_readme_set_up_and_test_commands_are_cis() -> None:
    """README's development block is what .ci/run runs, word for word."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [[line.strip() for line in body] for _, _, body in code_blocks(readme)]
    for command in ('pip install -e ".[dev]"', "pytest"):
        assert command in ci, f".ci/run no longer runs {command!r}"
        assert any(block == ['pip install -e ".[dev]"', "pytest"] for block in blocks), (
            "README.md has no code block of exactly CI's set-up and test commands")


# --------------------------------------------------------------------------- links


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    fenced = {n for first, _, body in code_blocks(text) for n in range(first, first + len(body))}
    return {slug(line.lstrip("#")) for n, line in enumerate(text.splitlines(), 1)
            if line.startswith("#") and n not in fenced}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_between_pages_lead_somewhere(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


# --------------------------------------------------------------------------- imports table


def architecture_allowed() -> dict[str, set[str]]:
    """``ALLOWED`` of tests/test_architecture.py, read with ast (nothing is imported)."""
    tree = ast.parse((ROOT / "tests" / "test_architecture.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "ALLOWED":
            code = compile(ast.Expression(node.value), "ALLOWED", "eval")
            value = eval(code, {"__builtins__": {}, "frozenset": frozenset})
            return {name: set(allowed) for name, allowed in value.items()}
    raise AssertionError("tests/test_architecture.py has no ALLOWED")


def documented_allowed() -> dict[str, set[str]]:
    """The table under "## Allowed imports" of docs/how-it-works.md."""
    text = (ROOT / "docs" / "how-it-works.md").read_text(encoding="utf-8")
    section = text.split("## Allowed imports", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        table[cells[0].strip("`")] = set(re.findall(r"`([^`]+)`", cells[1]))
    return table


def test_the_allowed_imports_table_is_the_architecture_tests() -> None:
    assert documented_allowed() == architecture_allowed()


# --------------------------------------------------------------------------- figures

_N = r"(\d+(?:\.\d+)?)"
#: Each figure: the patterns that find its quotations (one group: the value), and the value
#: it must have where the code defines it (``None``: whatever the pages agree on). Patterns
#: match the pages' text with every run of white space made one space.
FIGURES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "MiDaS convert, whole process, fp32 (fps)": ((
        rf"\(b\) `convert`, whole process \(fps\) \| {_N} \|",
        rf"converts 640x480 video at {_N} frames/s in fp32",
        rf"\| `midas-small` \| {_N} \|",
        rf"\| `midas-small` \(default\) \|[^|]*\| {_N} / [\d.]+ \|",
    ), None),
    "MiDaS convert, whole process, int8 (fps)": ((
        rf"\(b\) `convert`, whole process \(fps\) \| [\d.]+ \| {_N} \|",
        rf"frames/s in fp32 and {_N} in int8",
        rf"\| `midas-small` \| [\d.]+ \| {_N} \|",
        rf"\| `midas-small` \(default\) \|[^|]*\| [\d.]+ / {_N} \|",
    ), None),
    "Depth Anything V2 convert, whole process, fp32 (fps)": ((
        rf"364 \(the `convert` default\) \| [\d.]+ \| {_N} \(",
        rf"Depth Anything V2 Small at {_N} and",
        rf"\| `dav2-small` \| {_N} \|",
        rf"\| `dav2-small` \|[^|]*\| {_N} / [\d.]+ \|",
    ), None),
    "Depth Anything V2 convert, whole process, int8 (fps)": ((
        rf"364 \(the `convert` default\) \| [\d.]+ \| [\d.]+ \([\d.]+x\) \| {_N} \(",
        rf"Depth Anything V2 Small at [\d.]+ and {_N}",
        rf"\| `dav2-small` \| [\d.]+ \| {_N} \|",
        rf"\| `dav2-small` \|[^|]*\| [\d.]+ / {_N} \|",
    ), None),
    "Depth Anything V2 Small at 266x350, fp32 on this CPU (ms)": ((
        rf"266x350 input \| this CPU \(VNNI\) \| capped at AVX2 \| \| --- \| ---: \| ---: \| "
        rf"\| fp32 \| {_N} \|",
        rf"266x350 takes {_N} ms in fp32",
    ), None),
    "Depth Anything V2 Small at 266x350, int8 all layers on this CPU (ms)": ((
        rf"\| int8, all layers \| {_N} \(",
        rf"ms in fp32 and {_N} ms in int8 \(all layers\)",
    ), None),
    "Depth Anything V2 Small at 266x350, fp32 capped at AVX2 (ms)": ((
        rf"266x350 input \| this CPU \(VNNI\) \| capped at AVX2 \| \| --- \| ---: \| ---: \| "
        rf"\| fp32 \| [\d.]+ \| {_N} \|",
        rf"\(no VNNI\) [\d.]+ ms in int8 against {_N} ms",
    ), None),
    "Depth Anything V2 Small at 266x350, int8 all layers capped at AVX2 (ms)": ((
        rf"\| int8, all layers \| [\d.]+ \([\d.]+x\) \| {_N} \(",
        rf"\(no VNNI\) {_N} ms in int8",
    ), None),
    "Depth Anything V2 Small, linear layers fp32 with VNNI (ms)": ((
        rf"linear layers: {_N} to",
        rf"MatMul\) drop from {_N} ms in fp32",
    ), None),
    "Depth Anything V2 Small, linear layers int8 with VNNI (ms)": ((
        rf"linear layers: [\d.]+ to {_N} ms with VNNI",
        rf"ms in fp32 to {_N} ms in int8 and the convolutions",
    ), None),
    "Depth Anything V2 Small, linear layers fp32 capped at AVX2 (ms)": ((
        rf"ms with VNNI, {_N} to [\d.]+ ms without",
        rf"linear layers rise from {_N} ms",
    ), None),
    "Depth Anything V2 Small, linear layers int8 capped at AVX2 (ms)": ((
        rf"ms with VNNI, [\d.]+ to {_N} ms without",
        rf"rise from [\d.]+ ms to {_N} ms in int8",
    ), None),
    "Depth Anything V2 Small, KITTI AbsRel, published": ((
        rf"KITTI AbsRel {_N}, NYU-D AbsRel",
        rf"DIODE, δ1 \| \| (?:---: \| )+\| {_N} \|",
    ), None),
    "Depth Anything V2 Small, NYU-D AbsRel, published": ((
        rf"NYU-D AbsRel {_N} \(paper",
        rf"DIODE, δ1 \| \| (?:---: \| )+\| [\d.]+ \| [\d.]+ \| {_N} \|",
    ), None),
    "Depth Anything V2 Small fine-tuned on NYU-D, δ1, published": ((
        rf"NYU-D fine-tune: δ1 {_N}\)",
        rf"NYU Depth V2 \(indoor\) gives δ1 {_N}",
    ), None),
    "Depth Anything V2 Small fine-tuned on KITTI, δ1, published": ((
        rf"KITTI fine-tune: δ1 {_N}\)",
        rf"fine-tuned on KITTI \(driving\), δ1 {_N}",
    ), None),
    "MiDaS v2.1 small, ETH3D AbsRel, published": ((
        rf"ETH3D AbsRel {_N}, Sintel",
        rf"TUM, δ>1\.25 \(%\) \| \| (?:---: \| )+\| [\d.]+ \| {_N} \|",
    ), None),
    "MiDaS v2.1 small, Sintel AbsRel, published": ((
        rf"Sintel AbsRel {_N} \(MiDaS README\)",
        rf"TUM, δ>1\.25 \(%\) \| \| (?:---: \| )+\| [\d.]+ \| [\d.]+ \| {_N} \|",
    ), None),
    "Depth Anything V2 Small on DA-2K, published (%)": ((
        rf"DA-2K {_N} % of point pairs",
        rf"\*\*{_N} %\*\* correct",
    ), None),
    "MiDaS convert, in-process, fp32 (fps)": ((
        rf"\(b\) `convert`, in-process \(fps\) \| {_N} \|",
        rf"`convert` at {_N} frames/s",
        rf"converts {_N} / \(29\.97",
    ), None),
    "MiDaS backend alone, fp32 (fps)": ((
        rf"\(c\) backend alone[^|]*\| {_N} \|",
        rf"about {_N} frames per second in fp32",
    ), None),
    "MiDaS backend alone, int8 (fps)": ((
        rf"\(c\) backend alone[^|]*\| [\d.]+ \| {_N} \|",
        rf"fp32 and {_N} in int8 with frames in flight",
    ), None),
    "MiDaS live, int8, shown (fps)": ((
        rf"\| int8 \(`--precision int8`\) \| \d+ \| \d+ \(\*\*{_N}\*\*\)",
        rf"\| `midas-small` \|[^|]*\|[^|]*\| {_N} \(int8\)",
        rf"about {_N} shown per second in int8",
        rf"\| `midas-small` \| [\d.]+ \| [\d.]+ \| [\d.]+ / {_N} \|",
    ), None),
    "MiDaS live, fp32, shown (fps)": ((
        rf"\| fp32 \| \d+ \| \d+ \({_N}\)",
        rf"in int8, {_N} in fp32, on this machine",
        rf"\| `midas-small` \| [\d.]+ \| [\d.]+ \| {_N} / [\d.]+ \|",
    ), None),
    "Depth Anything V2 live, fp32, shown (fps)": ((
        rf"\| fp32 \(`auto` with these weights\) \| \d+ \| \d+ \(\*\*{_N}\*\*\)",
        rf"\| `dav2-small` \| [\d.]+ \| [\d.]+ \| {_N} / [\d.]+ \|",
    ), None),
    "Depth Anything V2 live, int8, shown (fps)": ((
        rf"\| int8 \(`--precision int8`\) \| \d+ \| \d+ \({_N}\) \| \d+ \| \d+ / \d+ \|",
        rf"\| `dav2-small` \| [\d.]+ \| [\d.]+ \| [\d.]+ / {_N} \|",
    ), None),
    "MiDaS checkpoint (MB)": ((
        rf"`midas_v21_small_256\.pt` \(about {_N} MB\)",
        rf"checkpoints? \({_N} to [\d.]+ MB\)",
        rf"official checkpoint \(about {_N} MB\)",
    ), None),
    "Depth Anything V2 Small checkpoint (MB)": ((
        rf"`depth_anything_v2_vits\.pth` \({_N} MB\)",
        rf"checkpoints? \([\d.]+ to {_N} MB\)",
    ), None),
    "first OpenVINO conversion of MiDaS (s)": ((
        rf"about {_N} s for MiDaS",
    ), None),
    "MiDaS input side": ((
        rf"`midas-small` {_N} \(both sides at most",
        rf"MiDaS {_N}; Depth Anything",
        rf"MiDaS: both sides at most {_N}\)",
    ), str(MIDAS_SMALL_SPEC.input.side)),
    "Depth Anything input side for pictures": ((
        rf"{_N} \(the reference's\) for pictures",
        rf"{_N} for pictures \(the reference's\)",
        rf"at its picture size, {_N}",
        rf"Depth Anything: both sides at least {_N}\)",
        rf"Depth Anything: {_N}, \d+ and \d+;",
    ), str(DAV2_SMALL_SPEC.input.side)),
    "Depth Anything input side for video files": ((
        rf"{_N} for video files",
        rf"runs at {_N} on files",
        rf"default video input size \({_N}\)",
        rf"Depth Anything: \d+, {_N} and \d+;",
    ), str(DAV2_SMALL_SPEC.video_side)),
    "Depth Anything input side for live input": ((
        rf"{_N} for live input",
        rf"and {_N} on live sources",
        rf"live input \({_N} by default\)",
        rf"default live input size \({_N}\)",
        rf"Depth Anything: \d+, \d+ and {_N};",
    ), str(DAV2_SMALL_SPEC.live_side)),
}


def quotations(patterns: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(page, value)`` of every match of ``patterns`` in the pages."""
    found = []
    for page in PAGES:
        text = re.sub(r"\s+", " ", page.read_text(encoding="utf-8"))
        for pattern in patterns:
            found += [(page.relative_to(ROOT).as_posix(), m.group(1))
                      for m in re.finditer(pattern, text)]
    return found


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_a_figure_quoted_twice_is_one_figure(name: str) -> None:
    patterns, expected = FIGURES[name]
    found = quotations(patterns)
    assert found, f"{name}: quoted nowhere any more; update or remove its patterns"
    values = {value for _, value in found}
    if expected is not None:
        values.add(expected)
    assert len(values) == 1, f"{name}: one figure, several values: {found}" + (
        f" (the code says {expected})" if expected is not None else "")


def test_figures_catch_a_second_value() -> None:
    """The check itself: the two fp32 backend speeds issue 23 found would be caught."""
    patterns, _ = FIGURES["MiDaS backend alone, fp32 (fps)"]
    text = ("| (c) backend alone, requests in flight, median of 5 rounds (fps) | 17.09 | 33.40 |"
            " On 2 CPU cores the network runs at about 17.6 frames per second in fp32")
    values = {m.group(1) for p in patterns for m in re.finditer(p, text)}
    assert values == {"17.09", "17.6"}
