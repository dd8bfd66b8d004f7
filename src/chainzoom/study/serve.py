"""``chainzoom study serve``: the blind A/B page and its JSON API, on a stdlib threaded HTTP server.

Why the standard library and not Gradio or FastAPI: the page is one static HTML file and
two JSON routes; what matters is exact control of when a vote is acknowledged (after
its transaction commits, :mod:`.store`) and a server that starts in a fraction of a
second, so that a killed one is back at once. The viewer's server already has the
safety this needs (``Host`` check against DNS rebinding, no path outside its folder),
and its helpers are reused.

Routes: ``/`` the page; ``/images/NAME`` the study's images (nothing else of the folder:
not ``study.json``, whose secret decides the sides, nor the votes); ``GET
/api/next?rater=ID`` the rater's next trial; ``POST /api/vote`` a vote.

Blindness: a trial's images are named by their SHA-256; which method is on the left,
and the order of trials, come from an HMAC of the rater and trial under the study's
secret. They are random to the rater, the same on every reload (so a rater resumes
where they stopped), and the server needs no state besides the votes to know which
method a click on "left" chose. The attention check sits in the middle of each
rater's order.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import re
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, unquote, urlsplit

from chainzoom.errors import ChainZoomError, OptionError
from chainzoom.study.create import IMAGES, VOTES, load_study
from chainzoom.study.store import Vote, VoteStore
from chainzoom.viewer.server import HOST, HOST_NAMES, MAX_PORT, bound_address, inside

PAGE = Path(__file__).resolve().parent / "static" / "study.html"
#: What a rater id and an idempotency key may be: short, printable, no markup.
RATER_ID = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
VOTE_KEY = re.compile(r"^[A-Za-z0-9-]{8,64}$")
MAX_BODY = 4096
#: Longest time a vote may say it took (a day): anything above is a broken clock.
MAX_SECONDS = 86400.0


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
            }
        return reply

    def vote(self, body: dict[str, Any]) -> dict[str, Any]:
        """Check and store one vote; raise ``ValueError`` with the reason for a bad one."""
        key, rater, trial_id, side, seconds = (body.get(k) for k in ("key", "rater", "trial", "side", "seconds"))
        if not isinstance(key, str) or not VOTE_KEY.match(key):
            raise ValueError("key must be 8-64 letters, digits or dashes")
        if not isinstance(rater, str) or not RATER_ID.match(rater):
            raise ValueError("rater must be 1-64 letters, digits or . _ @ + -")
        if trial_id not in self.trials:
            raise ValueError(f"no trial {trial_id!r}")
        if side not in ("left", "right"):
            raise ValueError("side must be left or right")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be a number in 0..{MAX_SECONDS:g}")
        trial = self.trials[trial_id]
        left, right = self.sides(rater, trial_id)
        chosen, other = (left, right) if side == "left" else (right, left)
        outcome = self.store.add(
            Vote(key, rater, trial_id, trial[chosen]["method"], trial[other]["method"], side, float(seconds))
        )
        return {"outcome": outcome, **{k: v for k, v in self.next_trial(rater).items() if k in ("done", "total")}}


class StudyHandler(BaseHTTPRequestHandler):
    """GET the page, images and next trial; POST votes. Each reply one log line."""

    server_version = "chainzoom-study"

    def __init__(self, *args: Any, study: Study, log: TextIO | None, check_host: bool, **kwargs: Any) -> None:
        self.study = study
        self.log = log
        self.check_host = check_host
        super().__init__(*args, **kwargs)

    def _refused_host(self) -> bool:
        if not self.check_host:
            return False
        port = bound_address(self.server)[1]
        allowed = {f"{name}:{port}" for name in HOST_NAMES}
        hosts = self.headers.get_all("Host") or []
        if len(hosts) == 1 and hosts[0].strip().lower() in allowed:
            return False
        self._json({"error": f"open http://{HOST}:{port}/"}, HTTPStatus.FORBIDDEN)
        return True

    def do_GET(self) -> None:
        if self._refused_host():
            return
        url = urlsplit(self.path)
        path = unquote(url.path)
        if "\0" in path:
            self._json({"error": "a NUL byte in the path"}, HTTPStatus.BAD_REQUEST)
        elif path in ("/", "/index.html"):
            self._send(PAGE.read_bytes(), "text/html; charset=utf-8")
        elif path.startswith(f"/{IMAGES}/"):
            self._send_file(inside(self.study.images, path[len(IMAGES) + 2 :]))
        elif path == "/api/next":
            rater = (parse_qs(url.query).get("rater") or [""])[0]
            if not RATER_ID.match(rater):
                self._json({"error": "rater must be 1-64 letters, digits or . _ @ + -"}, HTTPStatus.BAD_REQUEST)
            else:
                self._json(self.study.next_trial(rater))
        else:
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        if self._refused_host():
            return
        if urlsplit(self.path).path != "/api/vote":
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json({"error": "a vote needs a Content-Length"}, HTTPStatus.LENGTH_REQUIRED)
            return
        if not 0 < length <= MAX_BODY:
            self._json({"error": f"a vote is at most {MAX_BODY} bytes"}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("a vote is a JSON object")
            reply = self.study.vote(body)
        except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
            return
        self._json(reply)

    def _send_file(self, path: Path | None) -> None:
        if path is None:
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
        self._send(path.read_bytes(), kind.get(path.suffix.lower(), "application/octet-stream"))

    def _json(self, data: dict[str, Any], status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(data).encode(), "application/json", status)

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.log is not None:
            line = (format % args).encode("ascii", "backslashreplace").decode()
            self.log.write(f"{self.address_string()} {line}\n")


def make_server(folder: Path, host: str = HOST, port: int = 0, log: TextIO | None = None) -> ThreadingHTTPServer:
    """A server for the study in ``folder`` on ``host:port`` (0: any free port), not yet serving.

    On a loopback address only requests addressed to it are answered (DNS rebinding);
    a user who binds another address has chosen to let other machines in.
    """
    if not 0 <= port <= MAX_PORT:
        raise OptionError("port", f"must be 0..{MAX_PORT}, got {port}")
    study = Study(folder)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    handler = partial(StudyHandler, study=study, log=log, check_host=loopback)
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ChainZoomError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; try --port 0") from None
    server.daemon_threads = True
    return server


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
