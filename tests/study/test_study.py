"""The study without a browser: the trial builder, the statistics against a hand computation, the store, the server."""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from chainzoom.cli import main
from chainzoom.study.create import ATTENTION_BLURRED, ATTENTION_SHARP, StudyError, create_study, load_study, parse_runs
from chainzoom.study.report import summarize, write_report
from chainzoom.study.serve import Study, make_server
from chainzoom.study.stats import bradley_terry, win_counts
from chainzoom.study.store import Vote, VoteStore
from chainzoom.viewer.server import bound_address

pytest.importorskip("scipy", reason="the study's statistics need the [eval] extra (scipy)")

# --- the trial builder --------------------------------------------------------------------


def test_trials_pair_every_method_at_every_common_magnification(study: Path, runs) -> None:
    data = load_study(study)
    regular = [t for t in data["trials"] if not t.get("attention")]
    # 3 pairs of methods x 3 photos x (x4, x16, x64); x1 is the input itself and makes none
    assert len(regular) == 27
    assert {(t["a"]["method"], t["b"]["method"]) for t in regular} == {
        ("bicubic", "nearest"),
        ("bicubic", "lanczos"),
        ("nearest", "lanczos"),
    }
    assert sorted({t["magnification"] for t in regular}) == [4.0, 16.0, 64.0]
    for trial in regular:  # both sides show the same region of the same photo
        for side in ("a", "b"):
            source = Path(trial[side]["source"])
            manifest = json.loads((source.parent / "manifest.json").read_text())
            record = next(s for s in manifest["states"] if s["file"] == source.name)
            assert record["magnification"] == trial["magnification"] and record["box"] == trial["box"]
            assert manifest["request"]["input_sha256"] == trial["image"]
            assert (study / trial[side]["file"]).read_bytes() == source.read_bytes()
            assert trial[side]["method"] not in trial[side]["file"]  # the page's URL says nothing of the method
    check = data["trials"][-1]
    assert check["attention"] and check["expected"] == ATTENTION_SHARP == check["a"]["method"]
    assert check["b"]["method"] == ATTENTION_BLURRED and (study / check["b"]["file"]).is_file()


def test_runs_of_other_magnifications_or_centres_make_no_trial(runs, tmp_path) -> None:
    from tests.study.conftest import make_runs

    other = make_runs(tmp_path / "other", methods=("nearest",), scale=16, center=(0.2, 0.2))
    with pytest.raises(StudyError, match="share no image at the same magnification and centre"):
        create_study({"bicubic": runs["bicubic"], "nearest": other["nearest"]}, tmp_path / "study")
    assert not (tmp_path / "study").exists()  # nothing written


def test_the_create_command_refuses_bad_input_in_one_line(runs, tmp_path, capsys) -> None:
    assert main(["study", "create", "--runs", str(runs["bicubic"]), "--out", str(tmp_path / "s")]) == 2
    assert "a pairwise study needs at least two methods" in capsys.readouterr().err
    assert main(["study", "create", "--runs", str(runs["bicubic"]), str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith("chainzoom: error: ") and not (tmp_path / "s").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    args = ["study", "create", "--runs", f"a={runs['bicubic']}", f"b={runs['nearest']}", "--out"]
    assert main([*args, str(tmp_path / "full")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "made")]) == 0
    assert "9 trials and one attention check over a, b" in capsys.readouterr().out


def test_names_come_from_folders_unless_given() -> None:
    from chainzoom.errors import OptionError

    with pytest.raises(OptionError, match="both named"):
        parse_runs(["tests", "tests"])
    assert list(parse_runs(["x=tests", "y=tests"])) == ["x", "y"]


# --- the statistics, against a hand computation ---------------------------------------------

#: (winner, loser, times) of rater r1 and r2; r3 failed the attention check and is left out.
TABLE = [("A", "B", 8), ("B", "A", 2), ("A", "C", 5), ("C", "A", 5), ("B", "C", 3), ("C", "B", 7)]
STUDY = {
    "methods": {"A": "a", "B": "b", "C": "c"},
    "trials": [{"id": f"t{i}"} for i in range(40)]
    + [{"id": "attention", "attention": True, "expected": ATTENTION_SHARP}],
}


def fixed_votes() -> list[Vote]:
    votes, trial = [], 0
    for winner, loser, times in TABLE:
        for _ in range(times):
            rater = f"r{1 + trial % 2}"
            votes.append(Vote(f"k{trial:04d}", rater, f"t{trial}", winner, loser, "left", 1.0 + trial % 5))
            trial += 1
    votes += [
        Vote("c1", "r1", "attention", ATTENTION_SHARP, ATTENTION_BLURRED, "right", 2.0),
        Vote("c2", "r3", "attention", ATTENTION_BLURRED, ATTENTION_SHARP, "left", 0.5),
        *[Vote(f"bad{i}", "r3", f"t{i}", "B", "A", "left", 0.5) for i in range(6)],  # would change A-B
    ]
    return votes


def exact_two_sided_p(k: int, n: int) -> float:
    """The exact binomial test at p=1/2: the probability of every outcome no likelier than k."""
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[k] * (1 + 1e-7)))


def mm_bradley_terry(table: list[tuple[str, str, int]], methods: list[str]) -> dict[str, float]:
    """Hunter's (2004) MM iteration for the plain maximum-likelihood Bradley–Terry fit; log-strengths centred."""
    strength = dict.fromkeys(methods, 1.0)
    wins = {m: sum(t for w, _, t in table if w == m) for m in methods}
    games = {
        (i, j): sum(t for w, loser, t in table if {w, loser} == {i, j}) for i in methods for j in methods if i != j
    }
    for _ in range(5000):
        strength = {
            i: wins[i] / sum(games[i, j] / (strength[i] + strength[j]) for j in methods if j != i) for i in methods
        }
        mean_log = sum(math.log(s) for s in strength.values()) / len(methods)
        strength = {m: s / math.exp(mean_log) for m, s in strength.items()}
    return {m: math.log(s) for m, s in strength.items()}


def test_the_report_matches_a_hand_computation() -> None:
    summary = summarize(STUDY, fixed_votes())
    assert summary["raters_failed_attention"] == ["r3"] and summary["raters_unchecked"] == ["r2"]
    assert summary["counted_votes"] == 30 and summary["votes"] == 38
    scores = {s["method"]: s for s in summary["scores"]}
    # win rates: A 8+5 of 20, B 2+3 of 20, C 5+7 of 20
    assert {m: (s["wins"], s["comparisons"]) for m, s in scores.items()} == {"A": (13, 20), "B": (5, 20), "C": (12, 20)}
    assert scores["A"]["win_rate"] == pytest.approx(0.65) and scores["B"]["win_rate"] == pytest.approx(0.25)
    # sign tests: 8 of 10 -> 2 * (1 + 10 + 45) / 1024; 5 of 10 -> 1; 3 of 10 -> 2 * 176 / 1024
    pairs = {(p["first"], p["second"]): p for p in summary["pairs"]}
    assert (pairs["A", "B"]["first_wins"], pairs["A", "B"]["second_wins"]) == (8, 2)
    assert pairs["A", "B"]["p_value"] == pytest.approx(112 / 1024) == pytest.approx(exact_two_sided_p(8, 10))
    assert pairs["A", "C"]["p_value"] == pytest.approx(1.0)
    assert pairs["B", "C"]["p_value"] == pytest.approx(352 / 1024) == pytest.approx(exact_two_sided_p(3, 10))
    # Bradley–Terry: the fit agrees with the MM iteration (the weak prior moves it by < 0.002)
    expected = mm_bradley_terry(TABLE, ["A", "B", "C"])
    for method, score in scores.items():
        assert score["bt"] == pytest.approx(expected[method], abs=2e-3)
        assert score["bt_low"] < score["bt"] < score["bt_high"]
    assert sum(s["bt"] for s in scores.values()) == pytest.approx(0, abs=1e-6)
    assert summary["median_seconds"] == pytest.approx(3.0)


def test_the_bootstrap_is_reproducible_and_narrows_with_more_votes() -> None:
    one = summarize(STUDY, fixed_votes(), seed=3)["scores"]
    assert one == summarize(STUDY, fixed_votes(), seed=3)["scores"]
    more = {**STUDY, "trials": [{"id": f"t{i}"} for i in range(400)]}
    many = [
        Vote(f"k{r}{v.key}", v.rater, f"t{r * 40 + i}", v.choice, v.other, v.side, v.seconds)
        for r in range(10)
        for i, v in enumerate(fixed_votes()[:30])
    ]
    wide = {s["method"]: s["bt_high"] - s["bt_low"] for s in one}
    narrow = {s["method"]: s["bt_high"] - s["bt_low"] for s in summarize(more, many)["scores"]}
    assert all(narrow[m] < wide[m] / 2 for m in wide)


def test_a_method_that_wins_everything_gets_a_finite_top_score() -> None:
    theta = bradley_terry(win_counts(np.array([0, 0, 0, 1]), np.array([1, 1, 2, 2]), 3))
    assert np.all(np.isfinite(theta)) and theta[0] > theta[1] > theta[2]


def test_the_report_is_written_as_markdown_with_plots(study: Path, capsys) -> None:
    data = load_study(study)
    store = VoteStore(study / "votes.sqlite")
    for i, trial in enumerate(t for t in data["trials"] if not t.get("attention")):
        win, lose = (trial["a"], trial["b"]) if trial["a"]["method"] == "lanczos" or i % 3 else (trial["b"], trial["a"])
        store.add(Vote(f"key-{i:04d}", "rater", trial["id"], win["method"], lose["method"], "left", 1.0))
    assert main(["study", "report", str(study)]) == 0
    report = (study / "report" / "report.md").read_text()
    assert "| lanczos |" in report and "sign test p" in report and "![Bradley–Terry scores](scores.png)" in report
    for plot in ("scores.png", "wins.png"):
        assert (study / "report" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    numbers = json.loads((study / "report" / "report.json").read_text())
    assert numbers["counted_votes"] == 27
    assert not list((study / "report").glob(".*tmp*"))


def test_a_report_without_votes_is_one_line(study: Path, capsys) -> None:
    assert main(["study", "report", str(study)]) == 2
    assert (
        capsys.readouterr().err == f"chainzoom: error: {study} has no votes yet (serve it with chainzoom study serve)\n"
    )
    with pytest.raises(StudyError, match="is no study"):
        write_report(study / "images")


# --- the store -----------------------------------------------------------------------------


def test_a_vote_is_stored_once_whatever_is_sent_again(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.sqlite")
    vote = Vote("key-0001", "r", "t1", "A", "B", "left", 1.5)
    assert store.add(vote) == "stored"
    assert store.add(vote) == "repeat"  # the page retried after a lost answer
    assert store.add(Vote("key-0002", "r", "t1", "B", "A", "right", 2.0)) == "voted"  # a second tab: first stands
    assert store.votes() == [vote]
    assert VoteStore(tmp_path / "votes.sqlite").voted("r") == {"t1"}


# --- the server, without a browser ----------------------------------------------------------


@contextmanager
def serving(folder: Path) -> Iterator[tuple[str, int]]:
    server = make_server(folder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield bound_address(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def request(address, method: str, path: str, body: object = None, host: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Host": host or f"{address[0]}:{address[1]}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_server_serves_its_images_and_nothing_else(study: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (study / "images" / "link.png").symlink_to(secret)
    with serving(study) as address:
        assert request(address, "GET", "/")[0] == 200
        status, body = request(address, "GET", "/api/next?rater=me")
        trial = json.loads(body)["trial"]
        assert status == 200 and request(address, "GET", trial["left"])[1][:4] == b"\x89PNG"
        for path in (
            "/study.json",
            "/votes.sqlite",
            "/images/../study.json",
            "/images/%2e%2e/study.json",
            "/images/link.png",
            "/images/",
            "/images/%00",
            "/../../etc/passwd",
        ):
            assert request(address, "GET", path)[0] in (400, 404), path
        assert request(address, "GET", "/", host="evil.example")[0] == 403


def test_a_vote_chooses_the_method_shown_on_the_side_clicked(study: Path) -> None:
    served = Study(study)
    with serving(study) as address:
        trial = json.loads(request(address, "GET", "/api/next?rater=me")[1])["trial"]
        vote = {
            "key": "0123456789abcdef",
            "rater": "me",
            "trial": trial["id"],
            "ticket": trial["ticket"],
            "side": "right",
            "seconds": 2.5,
        }
        status, body = request(address, "POST", "/api/vote", vote)
        assert status == 200 and json.loads(body) == {"outcome": "stored", "done": 1, "total": 28}
        assert json.loads(request(address, "POST", "/api/vote", vote)[1])["outcome"] == "repeat"
        for bad in (
            {**vote, "side": "up"},
            {**vote, "trial": "nope"},
            {**vote, "seconds": -1},
            {**vote, "rater": "<b>"},
            {**vote, "key": "x"},
            [1, 2],
        ):
            assert request(address, "POST", "/api/vote", bad)[0] == 400, bad
        assert request(address, "POST", "/api/vote", b"{not json")[0] == 400
        assert request(address, "POST", "/api/vote", b"x" * 5000)[0] == 413
    stored = served.store.votes()
    assert len(stored) == 1
    right = served.sides("me", trial["id"])[1]
    record = served.trials[trial["id"]]
    assert (stored[0].choice, stored[0].side, stored[0].seconds) == (record[right]["method"], "right", 2.5)
    assert (study / "images" / Path(trial["right"]).name).read_bytes() == (study / record[right]["file"]).read_bytes()


def test_each_rater_gets_every_trial_once_in_an_order_of_their_own(study: Path) -> None:
    served = Study(study)
    first, second = served.order("alice"), served.order("bob")
    assert sorted(first) == sorted(second) == sorted(served.trials) and first != second
    assert first.index("attention") == 13 and served.order("alice") == first  # the same on every reload
    lefts = [served.sides("alice", t)[0] for t in first]
    assert 5 < lefts.count("a") < 23  # random sides, not always the first method on the left


# --- hardening: odd votes, forged votes, idle connections ----------------------------------


def raw(address, data: bytes) -> tuple[int, bytes]:
    """Status and body of a raw request; a dropped connection raises (what these tests rule out)."""
    with socket.create_connection(address, timeout=10) as client:
        client.sendall(data)
        received = b""
        while chunk := client.recv(1 << 16):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(address, body: bytes, content_type: str = "application/json", **headers: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request(
            "POST", "/api/vote", body=body, headers={"Content-Type": content_type, "Connection": "close", **headers}
        )
        response = connection.getresponse()
        text = response.read()
        assert b"\n" not in text.strip(), text  # one line
        return response.status, json.loads(text)
    finally:
        connection.close()


def shown_vote(address, rater: str = "me") -> dict:
    trial = json.loads(request(address, "GET", f"/api/next?rater={rater}")[1])["trial"]
    return {"key": uuid.uuid4().hex, "rater": rater, "trial": trial["id"], "ticket": trial["ticket"], "side": "left", "seconds": 1.0}  # fmt: skip


def test_a_vote_of_the_wrong_shape_or_nested_deep_is_400_in_one_line(study: Path, capfd) -> None:
    with serving(study) as address:
        vote = shown_vote(address)
        for bad in (
            json.dumps({**vote, "trial": [1, 2]}).encode(),
            json.dumps({**vote, "trial": {"id": 1}}).encode(),
            json.dumps({**vote, "rater": ["me"]}).encode(),
            b"[" * 2000 + b"]" * 2000,
            b'{"trial": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        ):
            status, answer = post(address, bad)
            assert status == 400 and answer["error"], (bad[:40], answer)
        assert post(address, json.dumps(vote).encode())[1]["outcome"] == "stored"  # the server is fine after them
    assert "Traceback" not in capfd.readouterr().err


def test_a_vote_from_another_site_or_not_json_is_refused_and_not_stored(study: Path) -> None:
    served = Study(study)
    with serving(study) as address:
        vote = shown_vote(address)
        body = json.dumps(vote).encode()
        own = f"http://{address[0]}:{address[1]}"
        assert post(address, body, "text/plain")[0] == 415  # what a plain form or fetch can send cross-site
        assert post(address, b"key=x&rater=me", "application/x-www-form-urlencoded")[0] == 415
        for origin in ("http://evil.example", "null", f"http://{address[0]}:{address[1] + 1}"):
            status, answer = post(address, body, Origin=origin)
            assert status == 403 and "another site" in answer["error"], origin
        assert served.store.votes() == []
        assert post(address, body, "application/json; charset=utf-8", Origin=own) == (
            200,
            {"outcome": "stored", "done": 1, "total": len(served.trials)},
        )


def test_a_vote_is_bound_to_a_trial_shown_to_that_rater(study: Path) -> None:
    served = Study(study)
    with serving(study) as address:
        mine = shown_vote(address, "alice")
        never_shown = next(t for t in served.order("alice") if t != mine["trial"])
        for forged in (
            {**mine, "trial": never_shown},  # a trial alice was never handed
            {**mine, "rater": "bob"},  # alice's trial and ticket under another name
            {**mine, "ticket": "not-the-ticket"},
            {k: v for k, v in mine.items() if k != "ticket"},
            {**mine, "ticket": {"a": 1}},
        ):
            status, answer = post(address, json.dumps(forged).encode())
            assert status == 403 and "was not shown to rater" in answer["error"], forged
        assert served.store.votes() == []
        assert post(address, json.dumps(mine).encode())[1]["outcome"] == "stored"
        again = json.loads(request(address, "GET", "/api/next?rater=alice")[1])["trial"]
        assert again["ticket"] == served.store.ticket("alice", again["id"])  # recorded as shown


def test_a_rater_id_is_matched_whole(study: Path) -> None:
    with serving(study) as address:
        assert request(address, "GET", "/api/next?rater=alice%0A")[0] == 400
        vote = shown_vote(address, "alice")
        status, answer = post(address, json.dumps({**vote, "rater": "alice\n"}).encode())
        assert status == 400 and "rater must be" in answer["error"]
        status, answer = post(address, json.dumps({**vote, "key": vote["key"] + "\n"}).encode())
        assert status == 400 and "key must be" in answer["error"]


def test_head_empty_bodies_and_other_methods_get_one_line(study: Path) -> None:
    with serving(study) as address:
        host = f"{address[0]}:{address[1]}"
        connection = http.client.HTTPConnection(*address, timeout=10)
        connection.request("HEAD", "/")
        response = connection.getresponse()
        assert response.status == 200 and int(response.headers["Content-Length"]) > 1000 and response.read() == b""
        connection.close()
        status, body = raw(address, f"POST /api/vote HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n".encode())  # fmt: skip
        assert status == 400 and b"a vote needs a body" in body
        status, body = raw(address, f"DELETE /api/vote HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 405 and body.count(b"\n") == 1


def test_the_listen_queue_is_deep_and_silent_connections_are_dropped(study: Path, monkeypatch) -> None:
    from chainzoom import serving as shared

    monkeypatch.setattr(shared.Handler, "timeout", 0.5)
    with serving(study) as address:
        host = f"{address[0]}:{address[1]}"
        with (
            socket.create_connection(address, timeout=10) as idle,
            socket.create_connection(address, timeout=10) as half,
        ):
            half.sendall(f"POST /api/vote HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode())  # fmt: skip
            assert request(address, "GET", "/api/next?rater=me")[0] == 200  # served meanwhile
            started = time.monotonic()
            assert idle.recv(100) == b"" and half.recv(100) == b""  # closed by the server, not by us
            assert time.monotonic() - started < 5
    server = make_server(study)
    server.server_close()
    assert server.request_queue_size >= 128
