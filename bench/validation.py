"""Validating large workflow documents: the core's `load_workflow` on 1,000-10,000 jobs.

Each measurement is a fresh interpreter that parses and validates one document and reports
its wall time and peak RSS (`resource.getrusage`), so the figures include nothing else. The
documents are what generated fan-outs look like:

    chain   job i needs job i-1 and reads its output in a template (the deepest ancestry)
    fanin   10,000 independent jobs, one more needing all of them (the widest edge list)
    wide    independent jobs, each with three templates over inputs (template parsing)

`--against REV` measures the same documents on the code of an older commit (extracted with
`git archive` into a temporary directory, run with this interpreter), side by side in one run,
and prints the ratio. Run by hand, not in CI:

    .venv/bin/python bench/validation.py --jobs 1000 10000 --reps 3 --against 26aed06
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, sys, time
sys.path.insert(0, sys.argv[1])
try:
    from flowforge.core.validation import load_workflow
except ImportError:  # code from before the core layer
    from flowforge.spec import load_workflow
text = open(sys.argv[2]).read()
started = time.perf_counter()
wf = load_workflow(text)
elapsed = time.perf_counter() - started
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(wf.jobs))
"""


def document(shape: str, n: int) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    for i in range(n):
        job: dict[str, Any] = {"name": f"j{i}", "runtime": "bash", "script": "echo hi"}
        if shape == "chain" and i:
            job["needs"] = [f"j{i - 1}"]
            job["env"] = {"PREV": f"{{{{ jobs.j{i - 1}.output.rows }}}}"}
        elif shape == "wide":
            job["env"] = {"A": "{{ inputs.a }}", "B": "{{ inputs.b | upper }}",
                          "C": "x-{{ run.id }}-{{ inputs.a }}"}
        jobs.append(job)
    if shape == "fanin":
        jobs.append({"name": "last", "runtime": "bash", "script": "echo done",
                     "needs": [j["name"] for j in jobs], "env": {"A": "{{ jobs.j0.output }}"}})
    return {"name": f"bench-{shape}", "settings": {"execution": "dag"},
            "inputs": {"a": {"type": "string", "default": "x"},
                       "b": {"type": "string", "default": "y"}},
            "jobs": jobs}


def measure(code_root: Path, path: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(code_root), str(path)],
                         capture_output=True, text=True, timeout=3600, check=True)
    seconds, rss, _ = out.stdout.split()
    return float(seconds), float(rss)


def old_tree(rev: str, into: Path) -> Path:
    archive = into / "old.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "flowforge"], stdout=out,
                       check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "old", filter="data")
    return into / "old"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--shapes", nargs="+", default=["chain", "fanin", "wide"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--against", help="a commit to measure side by side (e.g. 26aed06)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ff-bench-validation-") as tmp:
        work = Path(tmp)
        old = old_tree(args.against, work) if args.against else None
        rows = []
        for shape in args.shapes:
            for n in args.jobs:
                path = work / f"{shape}-{n}.json"
                path.write_text(json.dumps(document(shape, n)))
                new = [measure(ROOT, path) for _ in range(args.reps)]
                was = [measure(old, path) for _ in range(args.reps)] if old else []
                rows.append((shape, n, new, was))
                t = statistics.median(s for s, _ in new)
                rss = max(r for _, r in new)
                line = f"{shape:6} {n:>6} jobs: {t:7.2f} s  peak {rss:6.0f} MB"
                if was:
                    t_old = statistics.median(s for s, _ in was)
                    rss_old = max(r for _, r in was)
                    line += (f"   | {args.against}: {t_old:7.2f} s  peak {rss_old:6.0f} MB"
                             f"   | time ratio {t / t_old:.3f}")
                print(line, flush=True)
        print(json.dumps([{"shape": s, "jobs": n, "seconds": [x for x, _ in new],
                           "peak_mb": [r for _, r in new], "against": args.against,
                           "against_seconds": [x for x, _ in was],
                           "against_peak_mb": [r for _, r in was]} for s, n, new, was in rows]))


if __name__ == "__main__":
    main()
