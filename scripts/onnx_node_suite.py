"""ONNX's backend node tests through plain TVM 0.27 and through slimtvm: how many each compiles and
matches (≤ 1e-4 relative, integers exact), and every case slimtvm loses that plain TVM handles.

    .venv/bin/python scripts/onnx_node_suite.py [--filter WORD,WORD] [--every N] [--target host] [--json OUT]

Cases run in worker processes, a few dozen each, so a case that crashes TVM costs only itself
(it is reported as "crashed"). The first run downloads onnx 1.16.2's wheel as data
(tests/onnx_node_tests.py). Exit status 1 when slimtvm loses a case plain TVM matches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

CHUNK = 40


def _worker(names: list, target: str) -> None:
    warnings.simplefilter("ignore")
    from onnx_node_tests import evaluate

    for name in names:
        print(json.dumps(evaluate(name, target)), flush=True)


def run_cases(names: list, target: str = "host") -> list:
    """``evaluate`` of every case, in worker processes; a case that kills its worker is "crashed"."""
    results, pending = [], list(names)
    while pending:
        chunk, pending = pending[:CHUNK], pending[CHUNK:]
        proc = subprocess.run([sys.executable, __file__, "--worker", target, *chunk], capture_output=True, text=True, timeout=3600)
        done = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        results.extend(done)
        if len(done) < len(chunk):
            crashed = chunk[len(done)]
            reason = f"crashed (exit {proc.returncode})"
            results.append({"case": crashed, "plain": reason, "slimtvm": reason})
            pending = chunk[len(done) + 1 :] + pending
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", default="", help="only cases whose name contains one of these words (comma-separated)")
    parser.add_argument("--every", type=int, default=1, help="every N-th selected case (a sample)")
    parser.add_argument("--target", default="host")
    parser.add_argument("--json", help="write every case's result here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker[1:], args.worker[0])
        return 0
    from onnx_node_tests import case_names

    words = [word for word in args.filter.split(",") if word]
    names = [name for name in case_names() if not words or any(word in name for word in words)][:: args.every]
    results = run_cases(names, args.target)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    plain = sum(r["plain"] == "match" for r in results)
    ours = sum(r["slimtvm"] == "match" for r in results)
    lost = [r for r in results if r["plain"] == "match" and r["slimtvm"] != "match"]
    gained = [r for r in results if r["plain"] != "match" and r["slimtvm"] == "match"]
    print("| ONNX node tests (onnx 1.16.2) | cases | plain TVM 0.27 matches | slimtvm matches | lost by slimtvm | matched by slimtvm only |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.filter or 'all'}{f' (every {args.every}th)' if args.every > 1 else ''} | {len(results)} | {plain} | {ours} | {len(lost)} | {len(gained)} |")
    for r in lost:
        print(f"lost: {r['case']}: {r['slimtvm']}")
    for r in gained:
        print(f"gained: {r['case']} (plain TVM: {r['plain']})")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
