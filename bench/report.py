"""Markdown tables from the benchmark results, and the targets of issue 6 checked against them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from . import overview

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SUPERSEDED = "## Superseded runs"  # the docs' last part: runs no machine's section holds any more


def _f(v: Optional[float], fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _which(default: str, case: dict[str, Any]) -> str:
    """Where the pipeline's default here is not fp32: its name (and what a timed one kept), and
    the fp32 and bf16 figures beside it."""
    fp = case["variants"].get("models (fp32)")
    if default == "models (fp32)" or fp is None:
        return ""
    kept = case.get("cpu_split", {}).get(default, {})
    what = f"{default}: {_split_choice(kept)}" if kept.get("timed") else default
    bf = case["variants"].get("models (bf16 autocast)")
    beside = f"bf16 {bf['speedup_vs_reference']:.2f}x, " if bf is not None and default != "models (bf16 autocast)" else ""
    return f" ({what}, the default here; {beside}fp32 {fp['speedup_vs_reference']:.2f}x)"


def machine_line(m: dict[str, Any]) -> str:
    tf32 = {True: ", TF32 convolutions on", False: ", TF32 convolutions off"}.get(m.get("tf32_conv"), "")
    tf32 += ", cudnn.benchmark off (GCN_CUDNN_BENCHMARK)" if m.get("cudnn_benchmark") is False else ""
    gpu = f", {m['gpu']} ({m['gpu_memory_gib']} GiB, CUDA {m['cuda']}, cuDNN {m['cudnn']}{tf32})" if "gpu" in m else ""
    return (f"{m['cpu']}, {m['cores']} usable cores ({m['capability']}){gpu}; torch {m['torch']}, "
            f"Python {m['python']}; load average at start {m['load_avg']} (1, 5, 15 min); {m['date']}"
            + (f"; malloc: {m['allocator']}" if "allocator" in m else ""))


SPLIT_WORDS = {True: "split", False: "one pass", None: "undecided"}  # models.cpu_split.decision's answers


def _split_choice(d: dict[str, Any]) -> str:
    """What ``models.cpu_split`` ran in a settled variant (bench.langevin.settle_split); for one
    that timed fp32 beside bf16, which precision it kept."""
    precision = ""
    if d.get("timed") and d.get("amp") is not None:
        precision = "bf16, " if d["amp"] else "fp32, "
    if d.get("policy", "auto") != "auto":
        split = d["split"] if d.get("timed") else bool(d["split"])
        return f"{precision}{SPLIT_WORDS[split]} (GCN_CPU_SPLIT={d['policy']})"
    return f"{precision}{SPLIT_WORDS[d['split']]} ({d['loops']} loop{'' if d['loops'] == 1 else 's'} of trial)"


def _probes(peak: dict[str, Any]) -> str:
    """The probes' figures; where the peak was probed before and after the cases
    (``bench.common.best_peaks``), both moments' peaks first, so a machine whose speed drifted
    shows it."""
    probes = ", ".join(f"{k} {v['gflops_best']:.0f}" for k, v in peak["probes"].items())
    moments = peak.get("peak_gflops_before_after")
    if not moments:
        return f"best of each probe: {probes} GFLOP/s"
    return (f"probed before and after the cases (peaks {moments[0]:.0f} and {moments[1]:.0f}); "
            f"each probe's better figure: {probes} GFLOP/s")


def langevin_tables(r: dict[str, Any], m: dict[str, Any] | None = None) -> list[str]:
    """The section's tables; ``m`` (the results' machine) says what a GPU's float32 was."""
    m = m or {}
    out = []
    for entry in r["by_threads"]:
        pk = entry["peak"]
        out += [f"**{entry['threads']} thread(s)**. Measured fp32 peak {pk['peak_gflops']:.0f} GFLOP/s "
                f"({pk['peak_probe']}; {_probes(pk)}). Load average after: {entry['load_avg_after']}.", ""]
        if pk.get("bf16"):
            b = pk["bf16"]
            out += [f"Measured bf16 peak {b['peak_gflops']:.0f} GFLOP/s ({b['peak_probe']}; {_probes(b)}): "
                    "the bf16 rows' % of peak is of this one.", ""]
        if m.get("tf32_conv"):
            out += ["cuDNN ran float32 convolutions in TF32 (PyTorch's default, left on): the fp32 rows, the "
                    "reference loop and the fp32 peak's convolution probes are TF32 figures; the agreement "
                    "column was checked with TF32 off.", ""]
        elif "gpu" not in m:
            out += ["GFLOP/s count the direct convolutions' multiply-adds; FFT convolutions (NNPACK, "
                    "`models.cpu_conv`) do fewer, so their rate can pass the peak.", ""]
        out += ["| case | implementation | image-steps/s (median) | GFLOP/s median / best | % of peak (best) "
                "| x reference (paired median) | agrees with reference (max rel. diff) | load (1 min) |",
                "|---|---|---|---|---|---|---|---|"]
        for c in entry["cases"]:
            for name, v in c["variants"].items():
                agree = c["agreement_rel_max"].get(name)
                loads = v["timing"]["load_avg_1m"]
                out.append(
                    f"| {c['name']} ({c['gflop_per_step']:.2f} GFLOP/step) | {name} | {v['image_steps_per_s']:.1f} "
                    f"| {v['gflops_median']:.0f} / {v['gflops_best']:.0f} | {100 * v['peak_fraction_best']:.0f} %"
                    f"{' of bf16' if v.get('peak_dtype') == 'bf16' else ''} "
                    f"| {_f(v.get('speedup_vs_reference'), '{:.2f}x')} | {_f(agree, '{:.1e}')} "
                    f"| {min(loads):.1f}-{max(loads):.1f} |")
        out.append("")
        splits = [f"{c['name']} {name}: {_split_choice(d)}"
                  for c in entry["cases"] for name, d in c.get("cpu_split", {}).items()]
        if splits:
            out += ["`models.cpu_split` under its policy, settled before the agreement checks and the timed "
                    "rounds (the trial's loops untimed): " + "; ".join(splits) + ".", ""]
        errors = [f"{c['name']} {name}: {e}" for c in entry["cases"] for name, e in c.get("errors", {}).items()]
        if errors:
            out += ["Left out, they failed: " + "; ".join(errors) + ".", ""]
        if "graph_vs_eager_rel_max" in entry:
            out += ["CUDA graph against eager, same noise (max rel. diff): " + ", ".join(
                f"{k}: {v:.1e}" for k, v in entry["graph_vs_eager_rel_max"].items()) + "."]
            if "stale_graph_rel_max" in entry:
                out += [f"A graph still replaying the weights before the update would differ by "
                        f"{entry['stale_graph_rel_max']:.1e} (the scale the last figure must stay well under)."]
            out.append("")
        if "graph_check_error" in entry:
            out += ["CUDA graph check failed: `" + entry["graph_check_error"].strip().splitlines()[-1] + "`", ""]
        if entry["learning"]:
            out += ["| learning iteration | T | chains | reference s/it | models s/it | x reference | GFLOP/it |",
                    "|---|---|---|---|---|---|---|"]
            for l in entry["learning"]:
                models, ratio = f"{l['models_s']:.3f}", f"{l['speedup']:.2f}x"
                if "models_fp32_s" in l:  # the default here is bf16: fp32 beside it
                    models += f" ({l['precision']}); fp32 {l['models_fp32_s']:.3f}"
                    ratio += f"; fp32 {l['speedup_fp32']:.2f}x"
                out.append(f"| {l['name']} ({l['learner']}, {l['optimizer']}, depth {l['depth']}) | {l['langevin_steps']} "
                           f"| {l['chains']} | {l['reference_s']:.3f} | {models} | {ratio} "
                           f"| {l['gflop_per_iteration']:.1f} |")
            out.append("")
    return out


def quality_tables(r: dict[str, Any]) -> list[str]:
    fl = r["floor"]
    out = [f"Exemplar: {r['exemplar']}; real floor patch SWD {fl['patch_swd']:.4f} (copy max NCC between the halves "
           f"{fl['copy_max_ncc']:.3f}); threshold {r['factor']} x floor; {r['threads']} thread(s)"
           + (f"; the net in {r['precision']}" if "precision" in r else "") + ".", "",
           "| recipe | reached | learning seconds: race / paired | iterations | patch SWD at stop | copy max NCC "
           "| diversity | what |",
           "|---|---|---|---|---|---|---|---|"]
    for name, v in r["recipes"].items():
        when = (f"{v['seconds']:.1f} / {_f(v.get('seconds_paired'))}" if v["reached"] else
                f"not reached in {v['stopped_at_s']:.0f} s" + (" (schedule finished)" if v["schedule_finished"] else ""))
        out.append(f"| {name} | {'yes' if v['reached'] else 'no'} | {when} | {v['iterations']} "
                   f"| {v['final']['patch_swd']:.4f} | {v['final']['copy_max_ncc']:.3f} | {v['final']['diversity']:.1f} "
                   f"| {v['what']} |")
    if "speedup" in r:
        out += ["", f"Project recipe reached the threshold {r['speedup']:.1f}x sooner than the authors' "
                    f"(iterations x per-iteration cost timed round-robin; the race's own clocks give "
                    f"{r['speedup_race']:.1f}x)."]
    elif "speedup_at_least" in r:
        out += ["", f"Project recipe reached it; the authors' did not: at least {r['speedup_at_least']:.1f}x sooner."]
    return out + [""]


def service_tables(r: dict[str, Any]) -> list[str]:
    out = ["| mode | broker | job table | direct work ms | submit-to-done ms (median) | overhead ms | server view ms "
           "| load (1 min) |",
           "|---|---|---|---|---|---|---|---|"]
    status = ["| mode | load | req/s | p50 ms | p99 ms | max ms | errors | server CPU ms/request "
              "| generator CPU/s | load (1 min) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    pinned = None
    for mode in ("embedded", "redis", "redis+postgres"):
        v = r.get(mode)
        if v is None:
            continue
        if "error" in v or "skipped" in v:
            out.append(f"| {mode} | {v.get('skipped') or v.get('error', '')[:200]} |" + " |" * 6)
            continue
        lat = v["latency"]
        server = v["overhead_server_view_s"]
        out.append(f"| {mode} | {v['broker']} | {v.get('job_table', 'sqlite')} | {1e3 * v['direct']['median_s']:.0f} | {1e3 * lat['median_client_s']:.0f} "
                   f"| {1e3 * v['overhead_s']:.0f} | {_f(None if server is None else 1e3 * server, '{:.0f}')} "
                   f"| {min(lat['load_avg_1m']):.1f}-{max(lat['load_avg_1m']):.1f} |")
        sl = v["status_load"]
        pinned = sl.get("pinned", pinned)
        for name in ("bounded", "closed"):
            s = sl.get(name)
            if s:
                status.append(f"| {mode} | {s['mode']} | {s['rps']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
                              f"| {s['max_ms']:.1f} | {s['errors']} | {s['server_cpu_ms_per_request']:.2f} "
                              f"| {s['client_cpu_per_s']:.2f} | {s['load_avg_1m']:.1f} |")
    job = next((v["job"] for v in r.values() if isinstance(v, dict) and "job" in v), None)
    if job:
        out += ["", f"Sampling job: {job}."]
    out += ["", "Status endpoint: GET /v1/jobs/{id} from 32 keep-alive connections (bench/httpload.py, its own "
                f"process; CPU pinning: {pinned}); bounded: sent on a fixed schedule, latency from the scheduled "
                "time; closed loop: each client asks again as soon as it is answered.", ""] + status
    return out + [""]


def scaling_tables(r: dict[str, Any]) -> list[str]:
    pts = r["points"]
    by = {(p["preset"], p["size"], p["chains"], p["impl"]): p for p in pts}
    keys = sorted({(p["preset"], p["size"], p["chains"]) for p in pts}, key=lambda k: (k[0], k[2], k[1]))
    out = [f"{r['threads']} thread(s); one subprocess per point; {_loops_timed(pts)}; peak memory: growth of the "
           "resident set while sampling (CPU) or CUDA max allocated"
           + (f"; models in {r['models_precision']}" if "models_precision" in r else "")
           + ".", "",
           "| preset | size px | chains | models s/step | reference s/step | x reference | models GFLOP/s "
           "| models peak MiB | reference peak MiB | models (`cpu_split`) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for k in keys:
        m, ref = by.get((*k, "models"), {}), by.get((*k, "reference"), {})
        if "error" in m or "error" in ref or not m or not ref:
            out.append(f"| {k[0]} | {k[1]} | {k[2]} | error: {(m.get('error') or ref.get('error') or '')[-120:]} |" + " |" * 6)
            continue
        out.append(f"| {k[0]} | {k[1]} | {k[2]} | {m['step_s']:.4f} | {ref['step_s']:.4f} | {ref['step_s'] / m['step_s']:.2f}x "
                   f"| {m['gflops']:.0f} | {m['peak_mib']:.0f} | {ref['peak_mib']:.0f} | {split_way(m)} |")
    return out + [""]


def _loops_timed(points: list[dict[str, Any]]) -> str:
    """How a scaling point's seconds per step were timed: loops of several steps (``bench.scaling``),
    or one-step loops in results files from before, whose figures carry each loop's set-up."""
    steps = sorted({p["loop_steps"] for p in points if "loop_steps" in p})
    if not steps:
        return "s/step: the median of one-step loops"
    loops = max(len(p.get("step_s_all", ())) for p in points)
    return (f"s/step: the median over {loops} timed loops of "
            f"{' or '.join(str(n) for n in steps)} steps (per loop, divided by its steps)")


def split_way(point: dict[str, Any]) -> str:
    """How a scaling point's ``models`` steps ran on the CPU: ``models.cpu_split``'s choice for
    that shape, settled first (and in how many loops); '-' where nothing was settled (CUDA, or a
    results file from before the scaling points settled it, whose steps ran one pass)."""
    way = point.get("cpu_split")
    if way is None:
        return "-"
    if way["loops"] == 0:  # nothing timed: one thread, or GCN_CPU_SPLIT=on / off
        return SPLIT_WORDS[way["split"]]
    return _split_choice(way)  # as the Langevin section words its settled variants


def targets(results: dict[str, Any], device: str) -> list[str]:
    """Issue 6's targets, each met / not met from these results (or '-' when not measured)."""
    rows: list[tuple[str, str, str]] = []

    def mark(ok: Optional[bool]) -> str:
        return "-" if ok is None else ("met" if ok else "not met")

    lg = results.get("langevin")
    if lg:
        for entry in lg["by_threads"]:
            t = entry["threads"]
            for c in entry["cases"]:
                first = next((k for k in c["variants"] if k != "reference"), None)  # what the pipeline uses here
                if first is None:  # every variant failed; the section names them
                    rows.append((f"{c['name']}, {t} thr", "not measured: every implementation failed", mark(False)))
                    continue
                v = c["variants"][first]
                if c["name"] == "texture@224":
                    if device == "cpu":
                        # the peak target is fp32 against the fp32 peak: the default's own row where it
                        # ran fp32 (what the pipeline does here), else the fp32 variant's
                        pinned = c["variants"].get("models (fp32)")
                        fp = v if v.get("peak_dtype") == "fp32" or pinned is None else pinned
                        label = "fp32" if fp is pinned else f"fp32 ({first}, the default here)"
                        aside = (f"; the fp32 variant {100 * pinned['peak_fraction_best']:.0f} %"
                                 if pinned is not None and fp is not pinned else "")
                        rows.append((f"CPU texture@224, {t} thr: >= 90 % of matmul peak",
                                     f"{label}: {100 * fp['peak_fraction_best']:.0f} % of the best probe in direct-convolution "
                                     f"FLOPs ({100 * fp['peak_fraction_median']:.0f} % median); "
                                     f"{100 * fp.get('sgemm_fraction_best', float('nan')):.0f} % of sgemm{aside}",
                                     mark(fp["peak_fraction_best"] >= 0.9)))
                        if v is not fp and v.get("peak_dtype") == "bf16":
                            rows.append((f"(CPU texture@224, {t} thr, {first}, the default here: of the bf16 peak)",
                                         f"{100 * v['peak_fraction_best']:.0f} %", "-"))
                        rows.append((f"CPU texture@224, {t} thr: no slower than the reference",
                                     f"{v['speedup_vs_reference']:.2f}x{_which(first, c)}",
                                     mark(v["speedup_vs_reference"] >= 1.0)))
                    else:
                        best = max(c["variants"].items(), key=lambda kv: kv[1].get("speedup_vs_reference", 0))
                        rows.append((f"GPU texture@224: >= 3x the reference", f"{best[1]['speedup_vs_reference']:.2f}x ({best[0]})",
                                     mark(best[1]["speedup_vs_reference"] >= 3)))
                if c["name"] == "texture-fast@64" and device == "cpu":
                    rows.append((f"CPU texture-fast@64, {t} thr: >= 1.3x the reference",
                                 f"{v['speedup_vs_reference']:.2f}x{_which(first, c)}",
                                 mark(v["speedup_vs_reference"] >= 1.3)))
                if device == "cuda" and "chains" in c["name"]:
                    best = max(c["variants"].items(), key=lambda kv: kv[1].get("speedup_vs_reference", 0))
                    rows.append((f"GPU {c['name']}: >= 3x the reference", f"{best[1]['speedup_vs_reference']:.2f}x ({best[0]})",
                                 mark(best[1]["speedup_vs_reference"] >= 3)))
    q = results.get("quality")
    if q:
        if "speedup" in q:
            rows.append(("time to quality: project >= 2x sooner", f"{q['speedup']:.1f}x", mark(q["speedup"] >= 2)))
        elif "speedup_at_least" in q:
            rows.append(("time to quality: project >= 2x sooner", f">= {q['speedup_at_least']:.1f}x (authors not reached)",
                         mark(q["speedup_at_least"] >= 2)))
        else:
            rows.append(("time to quality: project >= 2x sooner", "project recipe did not reach the threshold", mark(False)))
    s = results.get("service")
    if s:
        for mode, label in (("redis", "Redis, SQLite job table"), ("redis+postgres", "Redis, PostgreSQL job table")):
            red = s.get(mode, {})
            if "overhead_s" not in red:
                continue
            rows.append((f"service overhead < 100 ms per job ({label})", f"{1e3 * red['overhead_s']:.0f} ms",
                         mark(red["overhead_s"] < 0.1)))
            b = red["status_load"]["bounded"]
            rows.append((f"status p99 < 50 ms at 32 clients ({label}; {b['mode']})", f"{b['p99_ms']:.1f} ms",
                         mark(b["p99_ms"] < 50)))
            c = red["status_load"].get("closed")
            if c:
                rows.append((f"(status closed loop, {label}) req/s, p50 / p99",
                             f"{c['rps']:.0f} req/s, {c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms", "-"))
        emb = s.get("embedded", {})
        if "overhead_s" in emb:
            rows.append(("(embedded, for comparison) overhead / status p99", f"{1e3 * emb['overhead_s']:.0f} ms / "
                         f"{emb['status_load']['bounded']['p99_ms']:.1f} ms", "-"))
    out = ["| target | measured | |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


def render(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    device = "cuda" if m["device"].startswith("cuda") else "cpu"
    lines = [f"Machine: {machine_line(m)}.", "",
             f"Mode: {'quick' if results['quick'] else 'full'}. Rerun: `{command}`.", "", "#### Targets", ""]
    lines += targets(results, device)
    if "langevin" in results:
        lines += ["#### 1. Langevin throughput and learning iterations", ""] + langevin_tables(results["langevin"], m)
    if "quality" in results:
        lines += ["#### 2. Time to quality", ""] + quality_tables(results["quality"])
    if "service" in results:
        lines += ["#### 3. Service overhead", ""] + service_tables(results["service"])
    if "scaling" in results:
        lines += ["#### 4. Scaling", ""] + scaling_tables(results["scaling"])
    return "\n".join(lines).rstrip() + "\n"


def update_docs(tag: str, body: str, docs: Path = DOCS) -> None:
    """Replace (or append) this machine's generated section of docs/benchmarks.md, and rebuild
    the overview of every machine's targets from the sections (``bench.overview``)."""
    begin, end = overview.markers(tag)
    block = f"{begin}\n### Generated: {tag}\n\n{body}{end}"
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif SUPERSEDED in text:  # a new machine's section goes after the others, before the old runs
        head, tail = text.split(SUPERSEDED, 1)
        text = head.rstrip() + "\n\n" + block + "\n\n" + SUPERSEDED + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    docs.write_text(overview.refresh(text))


def main() -> None:
    """Re-render the tables of a results file: ``python -m bench.report bench/out/<machine>.json``."""
    import json
    import sys

    results = json.loads(Path(sys.argv[1]).read_text())
    print(render(results, "python -m bench" + (" --quick" if results.get("quick") else "")))


if __name__ == "__main__":
    main()
