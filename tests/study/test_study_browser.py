"""The study page in headless Chromium (20 votes), and a server killed mid-vote (no vote lost or doubled)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from chainzoom.study.create import ATTENTION_TRIAL, load_study
from chainzoom.study.serve import Study
from chainzoom.study.store import VoteStore

ROOT = Path(__file__).resolve().parents[2]
SERVE = """
import sys
from chainzoom.cli import main
sys.exit(main(["study", "serve", sys.argv[1], "--port", "0"]))
"""


def start_server(study: Path) -> tuple[subprocess.Popen, tuple[str, int]]:
    """``chainzoom study serve`` in a child process; its address read from the line it prints."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(study)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    line = child.stdout.readline()
    found = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
    assert found, f"no URL in {line!r}"
    return child, (found.group(1), int(found.group(2)))


def post_vote(address: tuple[str, int], vote: dict) -> dict | None:
    """The server's answer to a vote, or None when the connection failed (the server is gone)."""
    try:
        connection = http.client.HTTPConnection(*address, timeout=5)
        connection.request("POST", "/api/vote", json.dumps(vote), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        return answer if response.status == 200 else {"error": answer}
    except (OSError, http.client.HTTPException, json.JSONDecodeError):
        return None


def test_a_server_killed_mid_vote_loses_and_doubles_no_vote(study: Path) -> None:
    served = Study(study)
    votes = [  # every trial handed to its rater beforehand (what /api/next does, one at a time)
        {
            "key": uuid.uuid4().hex,
            "rater": f"r{r}",
            "trial": trial,
            "ticket": served.show(f"r{r}", trial),
            "side": "left",
            "seconds": 1.0,
        }
        for r in range(8)
        for trial in served.order(f"r{r}")
    ]
    acknowledged: set[str] = set()
    child, address = start_server(study)
    stop = threading.Event()

    def cast() -> None:  # votes as fast as the server takes them, until it is killed
        for vote in votes:
            if stop.is_set():
                return
            answer = post_vote(address, vote)
            if answer is None:
                return
            assert answer.get("outcome") == "stored", answer
            acknowledged.add(vote["key"])

    voter = threading.Thread(target=cast)
    voter.start()
    while len(acknowledged) < 40 and voter.is_alive():
        time.sleep(0.01)
    child.kill()  # SIGKILL, mid-stream: some vote is being received or committed now
    child.wait(10)
    stop.set()
    voter.join(20)
    assert 40 <= len(acknowledged) < len(votes)
    stored_now = {v.key for v in VoteStore(study / "votes.sqlite").votes()}
    assert acknowledged <= stored_now  # nothing acknowledged was lost
    assert len(stored_now) <= len(acknowledged) + 1  # at most the one in flight was stored unanswered

    # The page sends every unanswered vote again with its key; a repeat of an answered one is harmless.
    child, address = start_server(study)
    try:
        outcomes = [post_vote(address, vote) for vote in votes]
    finally:
        child.terminate()
        child.wait(10)
    assert all(answer is not None and "outcome" in answer for answer in outcomes), outcomes
    for vote, answer in zip(votes, outcomes):
        expected = {"repeat"} if vote["key"] in acknowledged else {"stored", "repeat"}
        assert answer["outcome"] in expected
    stored = VoteStore(study / "votes.sqlite").votes()
    assert sorted(v.key for v in stored) == sorted(v["key"] for v in votes)  # each vote once
    assert len({(v.rater, v.trial) for v in stored}) == len(votes)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_a_rater_casts_20_votes_in_chromium(study: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright ([test] extra)")
    artifacts = Path(os.environ.get("CHAINZOOM_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    data = load_study(study)
    blurred = next(t for t in data["trials"] if t.get("attention"))["b"]["file"]
    child, (host, port) = start_server(study)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            )
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(f"http://{host}:{port}/")
            page.fill("#rater", "rater-1")
            page.click("#start")
            seen = []
            for vote in range(20):
                page.wait_for_function(f"document.body.dataset.done === '{vote}' && document.body.dataset.trial")
                trial = page.evaluate("document.body.dataset.trial")
                assert trial not in seen
                seen.append(trial)
                left, right = page.locator("#left"), page.locator("#right")
                assert left.bounding_box()["width"] == right.bounding_box()["width"] > 200  # the same size
                assert left.bounding_box()["height"] == right.bounding_box()["height"]
                if vote == 3:
                    page.screenshot(path=str(artifacts / "study-trial.png"))
                if trial == ATTENTION_TRIAL:  # an attentive rater picks the sharp side
                    side = "right" if left.get_attribute("src").endswith(blurred) else "left"
                else:
                    side = ("left", "right")[vote % 2]
                if vote % 3:
                    page.click(f"#vote-{side}")
                else:
                    page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
            page.wait_for_function("document.body.dataset.done === '20'")
            browser.close()
    finally:
        child.terminate()
        child.wait(10)
    assert ATTENTION_TRIAL in seen  # the check sits in the middle of 28
    stored = VoteStore(study / "votes.sqlite").votes()
    assert len(stored) == 20 and [v.trial for v in stored] == seen
    served = Study(study)
    for vote in stored:
        trial = served.trials[vote.trial]
        shown = dict(zip(("left", "right"), served.sides("rater-1", vote.trial)))
        assert vote.choice == trial[shown[vote.side]]["method"] and vote.seconds > 0
    from chainzoom.study.report import summarize

    summary = summarize(data, stored)
    assert summary["counted_votes"] == 19 and summary["raters_failed_attention"] == []
