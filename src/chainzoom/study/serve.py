"""``chainzoom study serve``: the blind A/B page and its JSON API, on a stdlib threaded HTTP server.

Why the standard library and not Gradio or FastAPI: the page is one static HTML file and
two JSON routes; what matters is exact control of when a vote is acknowledged (after
its transaction commits, :mod:`.store`) and a server that starts in a fraction of a
second, so that a killed one is back at once. The viewer's server already has the
safety this needs (``Host`` check against DNS rebinding, no path outside its folder),
and its helpers are reused.

Routes: ``/`` the page; ``/images/NAME`` the study's images (nothing else of the folder:
not ``study.json``, whose secret decides the sides, nor the votes); ``GET
/api/next?rater=ID`` the rater's next trial, with its ticket; ``POST /api/vote`` a vote.

Blindness: a trial's images are named by their SHA-256; which method is on the left,
and the order of trials, come from an HMAC of the rater and trial under the study's
secret. They are random to the rater, the same on every reload (so a rater resumes
where they stopped), and the server needs no state besides the votes to know which
method a click on "left" chose. The attention check sits in the middle of each
rater's order.

Forged votes: a vote must be ``application/json`` (a plain form or ``text/plain`` post
from another page is refused), an ``Origin`` other than this server is refused, and each
vote carries the ticket the server gave with the trial it handed to that rater
(:meth:`.store.VoteStore.show`), which no other site can read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, unquote, urlsplit

from chainzoom.serving import HOST, Handler, Server, bound_address, check_port, is_loopback
from chainzoom.serving import make_server as make_http_server
from chainzoom.study.create import IMAGES, VOTES, load_study
from chainzoom.study.store import Vote, VoteStore
from chainzoom.viewer.server import inside

PAGE = Path(__file__).resolve().parent / "static" / "study.html"
#: What a rater id and an idempotency key may be (the whole of it: ``fullmatch``): short, printable, no markup.
RATER_ID = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
VOTE_KEY = re.compile(r"[A-Za-z0-9-]{8,64}")
RATER_RULE = "rater must be 1-64 letters, digits or . _ @ + -"
MAX_BODY = 4096
#: Longest time a vote may say it took (a day): anything above is a broken clock.
MAX_SECONDS = 86400.0


class VoteError(ValueError):
    """A vote refused, with the status to answer and the reason."""

    status = HTTPStatus.BAD_REQUEST


class NotShown(VoteError):
    """A vote on a trial the server never handed to its rater (or with another ticket)."""

    status = HTTPStatus.FORBIDDEN


class Study:
    """What the handler serves: one study folder, its trials and its votes."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        study = load_study(self.folder)
        self.question: str = study.get("question", "Which image is better?")
        self.secret = str(study["secret"]).encode()
        self.trials: dict[str, dict[str, Any]] = {t["id"]: t for t in study["trials"]}
        self.images = self.folder / IMAGES
        self.store = VoteStore(self.folder / VOTES)

    def _digest(self, *parts: str) -> bytes:
        return hmac.new(self.secret, "\0".join(parts).encode(), hashlib.sha256).digest()

    def order(self, rater: str) -> list[str]:
        """The rater's order of trials: shuffled, the attention check in the middle."""
        regular = [t for t, trial in self.trials.items() if not trial.get("attention")]
        random.Random(self._digest("order", rater)).shuffle(regular)
        checks = [t for t, trial in self.trials.items() if trial.get("attention")]
        middle = len(regular) // 2
        return regular[:middle] + checks + regular[middle:]

    def sides(self, rater: str, trial: str) -> tuple[str, str]:
        """Which of the trial's ``a``/``b`` is on the (left, right) for this rater."""
        return ("a", "b") if self._digest("sides", rater, trial)[0] & 1 else ("b", "a")

    def show(self, rater: str, trial: str) -> str:
        """Hand ``trial`` to ``rater`` (recorded in the votes' database); the ticket a vote on it must carry."""
        return self.store.show(rater, trial)

    def next_trial(self, rater: str) -> dict[str, Any]:
        done = self.store.voted(rater)
        order = self.order(rater)
        pending = [t for t in order if t not in done]
        reply: dict[str, Any] = {"rater": rater, "done": len(order) - len(pending), "total": len(order), "trial": None}
        if pending:
            trial = self.trials[pending[0]]
            left, right = self.sides(rater, trial["id"])
            reply["trial"] = {
                "id": trial["id"],
                "left": "/" + trial[left]["file"],
                "right": "/" + trial[right]["file"],
                "question": self.question,
                "ticket": self.show(rater, trial["id"]),
            }
        return reply

    def vote(self, body: Any) -> dict[str, Any]:
        """Check and store one vote; raise :class:`VoteError` with the reason for a bad one."""
        if not isinstance(body, dict):
            raise VoteError("a vote is a JSON object")
        key, rater, trial_id, side, seconds, ticket = (
            body.get(k) for k in ("key", "rater", "trial", "side", "seconds", "ticket")
        )
        if not isinstance(key, str) or not VOTE_KEY.fullmatch(key):
            raise VoteError("key must be 8-64 letters, digits or dashes")
        if not isinstance(rater, str) or not RATER_ID.fullmatch(rater):
            raise VoteError(RATER_RULE)
        if not isinstance(trial_id, str) or trial_id not in self.trials:
            raise VoteError(f"no trial {str(trial_id)[:80]!r}")
        if side not in ("left", "right"):
            raise VoteError("side must be left or right")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_SECONDS:
            raise VoteError(f"seconds must be a number in 0..{MAX_SECONDS:g}")
        shown = self.store.ticket(rater, trial_id)
        if shown is None or not isinstance(ticket, str) or not hmac.compare_digest(ticket, shown):
            raise NotShown(f"trial {trial_id!r} was not shown to rater {rater!r} (its ticket comes from /api/next)")
        trial = self.trials[trial_id]
        left, right = self.sides(rater, trial_id)
        chosen, other = (left, right) if side == "left" else (right, left)
        outcome = self.store.add(
            Vote(key, rater, trial_id, trial[chosen]["method"], trial[other]["method"], side, float(seconds))
        )
        return {"outcome": outcome, **{k: v for k, v in self.next_trial(rater).items() if k in ("done", "total")}}


class StudyHandler(Handler):
    """GET (and HEAD) the page, images and next trial; POST votes. Each reply one log line; errors JSON."""

    server_version = "chainzoom-study"
    methods = ("GET", "HEAD", "POST")

    def __init__(self, *args: Any, study: Study, **kwargs: Any) -> None:
        self.study = study
        super().__init__(*args, **kwargs)

    def error_body(self, code: int, text: str) -> tuple[bytes, str]:
        return json.dumps({"error": text}).encode() + b"\n", "application/json"

    def do_GET(self) -> None:
        if self.refuse_foreign_host():
            return
        url = urlsplit(self.path)
        path = unquote(url.path)
        if "\0" in path:
            self.send_error(HTTPStatus.BAD_REQUEST, explain="a NUL byte in the path")
        elif path in ("/", "/index.html"):
            self.send_reply(PAGE.read_bytes(), "text/html; charset=utf-8")
        elif path.startswith(f"/{IMAGES}/"):
            self._send_file(inside(self.study.images, path[len(IMAGES) + 2 :]))
        elif path == "/api/next":
            rater = (parse_qs(url.query).get("rater") or [""])[0]
            if not RATER_ID.fullmatch(rater):
                self.send_error(HTTPStatus.BAD_REQUEST, explain=RATER_RULE)
            else:
                self._json(self.study.next_trial(rater))
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        """A vote: JSON, from this server's own page (or no page at all), of at most :data:`MAX_BODY` bytes.

        A refused body is read first (up to a bound), so that a client still sending gets the reply.
        """
        try:
            length: int | None = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = None
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        refusal: tuple[HTTPStatus, str] | None = None
        if problem := self.foreign_host() or self.foreign_origin():
            refusal = HTTPStatus.FORBIDDEN, problem
        elif urlsplit(self.path).path != "/api/vote":
            refusal = HTTPStatus.NOT_FOUND, "not found"
        elif length is None:
            refusal = HTTPStatus.LENGTH_REQUIRED, "a vote needs a Content-Length"
        elif kind != "application/json":
            refusal = HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"a vote is application/json, not {kind or 'untyped'}"
        elif length <= 0:
            refusal = HTTPStatus.BAD_REQUEST, "a vote needs a body: a JSON object"
        elif length > MAX_BODY:
            refusal = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a vote is at most {MAX_BODY} bytes"
        if refusal is None and length is not None:
            self._vote(self.rfile.read(length))
            return
        assert refusal is not None
        if length is not None:
            self.drain(length)
        self.send_error(refusal[0], explain=refusal[1])

    def _vote(self, data: bytes) -> None:
        try:
            body = json.loads(data)
        except (ValueError, RecursionError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            self.send_error(HTTPStatus.BAD_REQUEST, explain=f"a vote is a JSON object ({problem})")
            return
        try:
            reply = self.study.vote(body)
        except VoteError as exc:
            self.send_error(exc.status, explain=str(exc))
            return
        self._json(reply)

    def _send_file(self, path: Path | None) -> None:
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
        self.send_reply(path.read_bytes(), kind.get(path.suffix.lower(), "application/octet-stream"))

    def _json(self, data: dict[str, Any]) -> None:
        self.send_reply(json.dumps(data).encode(), "application/json")


def make_server(folder: Path, host: str = HOST, port: int = 0, log: TextIO | None = None) -> Server:
    """A server for the study in ``folder`` on ``host:port`` (0: any free port), not yet serving.

    On a loopback address only requests addressed to it are answered (DNS rebinding);
    a user who binds another address has chosen to let other machines in. Votes from
    another site's page are refused either way (their ``Origin``, their type, their ticket).
    """
    check_port(port)
    study = Study(folder)
    handler = partial(StudyHandler, study=study, log=log)
    return make_http_server(host, port, handler, log, check_host=is_loopback(host))


def serve(folder: Path, host: str, port: int, log: TextIO | None = None) -> None:
    """Serve until Ctrl+C; print the URL first (a test reads it)."""
    server = make_server(folder, host, port, log)
    bound_host, bound_port = bound_address(server)
    print(f"Study {Path(folder)} at http://{bound_host}:{bound_port}/ (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
