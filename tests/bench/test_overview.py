"""bench.overview: every machine's targets side by side, rebuilt from the generated sections
whenever bench.report writes one, so the table at the top of docs/benchmarks.md never goes stale."""

from __future__ import annotations

from bench import overview, report
from bench.report import DOCS


def section(when: str, rows: list[tuple[str, str, str]]) -> str:
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    return (f"Machine: a CPU, 2 usable cores (AVX2); torch 2.13.0+cpu; {when} UTC.\n\nMode: full. Rerun: `x`.\n\n"
            f"#### Targets\n\n| target | measured | |\n|---|---|---|\n{table}\n\n#### 1. Langevin\n\n"
            "| a | b | c |\n|---|---|---|\n| ignored | 9.9x | met |\n")


FAST = section("2026-11-29 11:31:13", [("CPU texture@224, 2 thr: >= 90 % of matmul peak",
                                        "fp32: 100 % of the best probe (97 % median)", "met"),
                                       ("(CPU texture@224, bf16: of the bf16 peak)", "42 %", "-"),
                                       ("status p99 < 50 ms", "2.5 ms", "met")])
SLOW = section("2026-11-28 17:57:02", [("CPU texture@224, 2 thr: >= 90 % of matmul peak",
                                        "fp32: 88 % of the best probe", "not met"),
                                       ("time to quality: project >= 2x sooner", "4.5x", "met")])
DOC = f"# Benchmarks\n\nIntro.\n\n{overview.BEGIN}\nstale\n{overview.END}\n\n## Results\n"


def test_each_section_gives_its_run_and_the_first_figure_of_each_judged_target():
    doc = report_doc({"fast": FAST, "slow": SLOW})
    fast, slow = overview.sections(doc)
    assert (fast.tag, fast.when) == ("fast", "2026-11-29 11:31 UTC, full")
    assert fast.targets == {"CPU texture@224, 2 thr: >= 90 % of matmul peak": ("100 %", "met"),
                            "status p99 < 50 ms": ("2.5 ms", "met")}  # the '-' row and later tables left out
    assert slow.targets["CPU texture@224, 2 thr: >= 90 % of matmul peak"] == ("88 %", "not met")


def test_the_table_marks_a_miss_and_leaves_a_target_a_machine_did_not_measure_empty():
    lines = overview.table(overview.sections(report_doc({"fast": FAST, "slow": SLOW})))
    assert lines[0] == "| target | `fast` | `slow` |"
    assert "| latest run | 2026-11-29 11:31 UTC, full | 2026-11-28 17:57 UTC, full |" in lines
    assert "| CPU texture@224, 2 thr: >= 90 % of matmul peak | 100 % | **88 %** not met |" in lines
    assert "| status p99 < 50 ms | 2.5 ms | - |" in lines
    assert lines[-1] == "| targets met | 2 of 2 | 1 of 2 |"


def test_writing_a_section_rebuilds_the_overview_between_its_markers_only(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(DOC)
    report.update_docs("slow", SLOW, docs)
    report.update_docs("fast", FAST, docs)
    text = docs.read_text()
    assert "stale" not in text and text.startswith("# Benchmarks\n\nIntro.\n\n" + overview.BEGIN + "\n| target |")
    assert "| target | `slow` | `fast` |" in text
    report.update_docs("slow", SLOW.replace("fp32: 88 %", "fp32: 93 %").replace("not met", "met"), docs)
    again = docs.read_text()
    assert again.count(overview.BEGIN) == 1 and again.count("### Generated: slow") == 1
    assert "| CPU texture@224, 2 thr: >= 90 % of matmul peak | 93 % | 100 % |" in again


def test_a_new_machine_s_section_goes_before_the_superseded_runs(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(report_doc({"slow": SLOW}) + f"\n{report.SUPERSEDED}\n\nAn old run.\n")
    report.update_docs("fast", FAST, docs)
    text = docs.read_text()
    assert text.index("### Generated: slow") < text.index("### Generated: fast") < text.index(report.SUPERSEDED)
    assert text.rstrip().endswith("An old run.") and "| target | `slow` | `fast` |" in text


def test_a_document_without_the_markers_is_left_as_it_is():
    text = report_doc({"fast": FAST})
    assert overview.refresh(text.replace(overview.BEGIN, "")) == text.replace(overview.BEGIN, "")


def test_the_overview_in_the_docs_is_the_one_its_sections_give():
    text = DOCS.read_text()
    assert overview.BEGIN in text
    assert overview.refresh(text) == text, "rebuild it: python -m bench.overview"


def report_doc(bodies: dict[str, str]) -> str:
    return DOC + "".join(f"\n<!-- bench:{tag}:begin -->\n### Generated: {tag}\n\n{body}<!-- bench:{tag}:end -->\n"
                         for tag, body in bodies.items())
