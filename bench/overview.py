"""Issue 6's targets on every machine side by side, read back from the generated sections.

Why: docs/benchmarks.md holds one generated section per machine, each with its own targets
table, far apart in a long file. A reader asking "is it fast enough here, and where not?" needs
them in one table, and a hand-written one goes stale the moment a machine's section is rerun.
So ``bench.report.update_docs`` rebuilds this table between its markers every time it writes a
section: each column is what that machine's latest run wrote, nothing copied by hand.
"""

from __future__ import annotations

import re
from typing import NamedTuple

BEGIN, END = "<!-- bench-overview:begin -->", "<!-- bench-overview:end -->"
_SECTION = re.compile(r"<!-- bench:(?P<tag>[\w.+-]+):begin -->\n(?P<body>.*?)<!-- bench:(?P=tag):end -->", re.S)
_WHEN = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2})(?::\d{2})? UTC")
_FIGURE = re.compile(r"\d+(?:\.\d+)?(?:x| %| ms)")
VERDICTS = ("met", "not met")


def markers(tag: str) -> tuple[str, str]:
    """The comments around a machine's generated section (``bench.report.update_docs`` writes
    them; ``_SECTION`` reads them back)."""
    return f"<!-- bench:{tag}:begin -->", f"<!-- bench:{tag}:end -->"


class Section(NamedTuple):
    tag: str
    when: str  # "2026-11-29 11:31 UTC, full"
    targets: dict[str, tuple[str, str]]  # target -> (its first figure, met / not met)


def sections(text: str) -> list[Section]:
    """Every generated section's targets (rows judged met or not met; the informative rows, '-',
    are left to the section itself)."""
    found = []
    for m in _SECTION.finditer(text):
        body = m["body"]
        when = _WHEN.search(body)
        mode = re.search(r"^Mode: (\w+)\.", body, re.M)
        label = ", ".join(x for x in ((when[1] + " UTC") if when else "", mode[1] if mode else "") if x)
        targets = {}
        table = body.split("#### Targets", 1)[1].split("####", 1)[0] if "#### Targets" in body else ""
        for line in table.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[2] in VERDICTS:
                figure = _FIGURE.search(cells[1])
                targets[cells[0]] = (figure[0] if figure else cells[1], cells[2])
        found.append(Section(m["tag"], label, targets))
    return found


def table(found: list[Section]) -> list[str]:
    """One row per target (in the order the sections first name them), one column per machine:
    the figure its latest run measured, in bold with "not met" where it missed."""
    if not found:
        return ["No machine has a generated section yet."]
    rows = list(dict.fromkeys(t for s in found for t in s.targets))
    out = ["| target | " + " | ".join(f"`{s.tag}`" for s in found) + " |",
           "|---|" + "---|" * len(found),
           "| latest run | " + " | ".join(s.when or "-" for s in found) + " |"]
    for target in rows:
        cells = []
        for s in found:
            figure, verdict = s.targets.get(target, ("", ""))
            cells.append(f"**{figure}** not met" if verdict == "not met" else figure or "-")
        out.append(f"| {target} | " + " | ".join(cells) + " |")
    met = [sum(v == "met" for _, v in s.targets.values()) for s in found]
    out.append("| targets met | " + " | ".join(f"{n} of {len(s.targets)}" for n, s in zip(met, found)) + " |")
    return out


def refresh(text: str) -> str:
    """``text`` with the table between the overview's markers rebuilt from its generated
    sections (unchanged where the markers are absent)."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        return text
    body = "\n".join(table(sections(text)))
    return text[: start + len(BEGIN)] + "\n" + body + "\n" + text[stop:]


def main() -> None:
    """``python -m bench.overview``: rebuild the table in docs/benchmarks.md (after a section was
    edited by hand, or written by an older ``bench.report``)."""
    from .report import DOCS

    text = DOCS.read_text()
    if BEGIN not in text:
        raise SystemExit(f"bench.overview: {DOCS} has no {BEGIN} marker")
    DOCS.write_text(refresh(text))


if __name__ == "__main__":
    main()
