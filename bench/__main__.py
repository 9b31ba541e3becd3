"""One command for every benchmark of issue 6:

    python -m bench --quick          # < 3 minutes on a 2-core CPU: every section, fewer repeats
    python -m bench                  # the full run (6-30 minutes on a 2-core CPU, by its kind)
    python -m bench --device cuda    # on a GPU machine (the CPU figures stay in the docs)
    python -m bench --only langevin,scaling --threads 1,2
    python -m bench --quick --only service --service-modes redis --no-docs

Results: ``bench/out/<machine>.json`` (every figure, every repeat, load averages) and
``bench/out/<machine>.md`` (the tables); ``--docs`` (default) also replaces this machine's
generated section of ``docs/benchmarks.md``. Nothing here is asserted: the figures are figures.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback

import torch

from . import common, report
from models import precision  # after common, which puts the repository on the path

SECTIONS = ("langevin", "quality", "service", "scaling")


def _device(ap: argparse.ArgumentParser, name: str) -> torch.device:
    """``--device``: auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N; anything else, or
    CUDA where torch sees none, is a usage error, not a traceback minutes into a run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        ap.error(f"--device {name}: choose cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {name}: torch {torch.__version__} sees no CUDA device here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        ap.error(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def _thread_counts(ap: argparse.ArgumentParser, text: str) -> list[int]:
    """``--threads``: comma-separated counts, each at least 1."""
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        ap.error(f"--threads {text}: give thread counts of at least 1, e.g. 1,2")
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller grids (< 3 min on 2 CPU cores)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when torch sees a GPU)")
    ap.add_argument("--threads", default=None,
                    help="CPU thread counts for the Langevin section, e.g. 1,2 (default: all usable cores; "
                         "the full run adds 1); the other sections use the largest")
    ap.add_argument("--service-modes", default=None,
                    help="comma-separated modes of the service section (default: embedded,redis,redis+postgres)")
    ap.add_argument("--quality-cap", type=float, default=None, help="seconds each time-to-quality recipe may learn")
    ap.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True,
                    help="update this machine's section of docs/benchmarks.md")
    args = ap.parse_args(argv)

    device = _device(ap, args.device)
    if args.quality_cap is not None and not args.quality_cap > 0:
        ap.error(f"--quality-cap {args.quality_cap:g}: give a number of seconds above 0")
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    if args.service_modes:
        from .service import MODES
        bad = {m.strip() for m in args.service_modes.split(",")} - set(MODES)
        if bad:
            ap.error(f"unknown service mode(s): {', '.join(sorted(bad))}; choose from {', '.join(MODES)}")
    cores = common.usable_cores()
    threads = (_thread_counts(ap, args.threads) if args.threads else
               ([cores] if args.quick else sorted({1, cores})))
    # what a job gets (on CUDA: cudnn.benchmark; TF32 convolutions, PyTorch's default, left on
    # except under GCN_AMP=off, so the reference loop is a first implementation's; ``machine`` records both)
    precision.prepare_device(device)
    torch.set_num_threads(max(threads))
    allocator = common.settle_allocator()  # before any case: none times what an earlier one left

    tag = common.machine_tag(device)
    results = {"machine": common.machine(device, allocator), "quick": args.quick, "sections": sections}
    command = "python -m bench" + (" " + " ".join(shlex.quote(a) for a in argv) if argv else "")
    path = common.OUT / f"{tag}.json"
    started = time.monotonic()
    for section in sections:
        t = time.monotonic()
        try:
            if section == "langevin":
                from . import langevin
                results[section] = langevin.run(device, threads, args.quick)
            elif section == "quality":
                from . import quality
                torch.set_num_threads(max(threads))
                results[section] = quality.run(device, args.quick, args.quality_cap)
            elif section == "service":
                from . import service
                modes = [m.strip() for m in args.service_modes.split(",")] if args.service_modes else None
                results[section] = service.run(args.quick, modes)
            elif section == "scaling":
                from . import scaling
                results[section] = scaling.run(device, args.quick, max(threads))
        except Exception:  # keep the other sections' figures
            results[f"{section}_error"] = traceback.format_exc()[-3000:]
            common.log(f"{section} failed:\n{results[f'{section}_error']}")
        results.setdefault("seconds", {})[section] = round(time.monotonic() - t, 1)
        common.write_json(path, results)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["load_avg_end"] = common.load()
    common.write_json(path, results)
    body = report.render(results, command)
    (common.OUT / f"{tag}.md").write_text(body)
    if args.docs:
        report.update_docs(tag, body)
    print(body)
    common.log(f"wrote {path} and {common.OUT / (tag + '.md')}" + (" and docs/benchmarks.md" if args.docs else "")
               + f" in {results['total_seconds']:.0f} s")
    failed = [s for s in sections if f"{s}_error" in results]
    partial = [s for s in sections if isinstance(results.get(s), dict) and results[s].get("errors")]
    if failed or partial:  # the other figures are written; the exit status still says some are missing
        if failed:
            common.log(f"sections that failed: {', '.join(failed)} (their tracebacks are in {path})")
        for s in partial:
            common.log(f"{s}: parts left out: " + "; ".join(results[s]["errors"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
