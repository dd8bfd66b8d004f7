"""Benchmark: 50 study raters voting at the same instant, against ``chainzoom study serve``.

Run: ``python bench/study_voters.py [--voters 50] [--votes 5] [--listen-queue 128]``.
Prints the machine (CPU model from /proc/cpuinfo, cores) and the seconds each vote took to be
acknowledged; ``--json FILE`` also writes the numbers.

What is measured: a small study (two interpolation methods on 160x120 crops of the bundled
photos, 10 trials) is served by ``chainzoom study serve`` in a child process, as a user runs
it. ``--voters`` threads, each a rater with its own connection per request (as a browser's
``fetch``), wait on one barrier, then each asks for its next trial (``GET /api/next``) and
votes on it (``POST /api/vote``, the ticket from the trial), ``--votes`` times in a row. A
vote's time is from the barrier (or its previous vote) to its answer, so the first round
is 50 raters hitting the server at once. Every vote must be acknowledged (``stored``);
the largest time is the figure. ``--listen-queue 5`` serves with the standard library's
listen queue, as before it was raised, for comparison.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import small_study  # noqa: E402

SERVE = """
import sys
from chainzoom import serving
from chainzoom.cli import main
serving.Server.request_queue_size = int(sys.argv[2])
sys.exit(main(["study", "serve", sys.argv[1], "--port", "0"]))
"""


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def ask(address: tuple[str, int], method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*address, timeout=300)
    try:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, data, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def voter(address: tuple[str, int], rater: str, votes: int, start: threading.Barrier, out: dict) -> None:
    times, problems = [], []
    start.wait()
    for _ in range(votes):
        began = time.perf_counter()
        try:
            status, answer = ask(address, "GET", f"/api/next?rater={rater}")
            trial = answer.get("trial")
            if status != 200 or trial is None:
                problems.append(f"next: {status} {answer}")
                break
            vote = {"key": uuid.uuid4().hex, "rater": rater, "trial": trial["id"], "ticket": trial["ticket"]}
            status, answer = ask(address, "POST", "/api/vote", {**vote, "side": "left", "seconds": 1.0})
            if status != 200 or answer.get("outcome") != "stored":
                problems.append(f"vote: {status} {answer}")
                break
        except (OSError, http.client.HTTPException, ValueError) as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
            break
        times.append(time.perf_counter() - began)
    out[rater] = (times, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voters", type=int, default=50)
    parser.add_argument("--votes", type=int, default=5, help="votes per voter, one after the other (at most 10)")
    parser.add_argument("--listen-queue", type=int, default=128, help="the server's listen queue (the old one: 5)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        study = small_study(Path(scratch))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        child = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(study), str(args.listen_queue)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            assert child.stdout is not None
            found = re.search(r"http://([\d.]+):(\d+)/", child.stdout.readline())
            assert found, "the server printed no URL"
            address = (found.group(1), int(found.group(2)))
            start = threading.Barrier(args.voters)
            results: dict[str, tuple[list[float], list[str]]] = {}
            threads = [
                threading.Thread(target=voter, args=(address, f"rater-{i}", args.votes, start, results))
                for i in range(args.voters)
            ]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
        finally:
            child.terminate()
            child.wait(10)

    times = sorted(t for found, _ in results.values() for t in found)
    problems = [p for _, found in results.values() for p in found]
    first = sorted(found[0] for found, _ in results.values() if found)
    report = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "voters": args.voters,
        "votes_each": args.votes,
        "listen_queue": args.listen_queue,
        "acknowledged": len(times),
        "expected": args.voters * args.votes,
        "problems": problems[:10],
        "first_round_max_s": round(max(first), 3) if first else None,
        "median_s": round(statistics.median(times), 3) if times else None,
        "p95_s": round(times[int(0.95 * (len(times) - 1))], 3) if times else None,
        "max_s": round(max(times), 3) if times else None,
        "wall_s": round(wall, 2),
    }
    print(f"machine: {report['cpu']}, {report['cores']} cores, Python {report['python']}")
    print(f"{args.voters} voters x {args.votes} votes at once, listen queue {args.listen_queue}:")
    print(
        f"  acknowledged {report['acknowledged']} of {report['expected']}; per vote (next trial + vote): "
        f"median {report['median_s']} s, p95 {report['p95_s']} s, max {report['max_s']} s; "
        f"first round (all {args.voters} at once) max {report['first_round_max_s']} s; all done in {report['wall_s']} s"
    )
    for problem in report["problems"]:
        print(f"  problem: {problem}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not problems and len(times) == report["expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
