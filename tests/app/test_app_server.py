"""The app over HTTP, without a browser: only its own Host and Origin are answered; API values are checked.

One app for the module (Gradio takes seconds to start), with ``--allow-host zoom.lan``.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from chainzoom.app.server import read_request
from chainzoom.core.vocabulary import CONSISTENCY, MODES
from tests.servers import app as app_server

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "sample.jpg"
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    pytest.importorskip("gradio", reason="the app needs the [app] extra (gradio)")
    with app_server(tmp_path_factory.mktemp("app"), allow_hosts=["zoom.lan"]) as url:
        yield url


def get(url: str, path: str = "/", **headers: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and text of ``GET path``, sent with exactly these headers."""
    address = url.removeprefix("http://")
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", headers.pop("Host", address))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


@pytest.mark.slow
def test_only_its_own_host_and_the_allowed_names_are_answered(app: str) -> None:
    port = app.rpartition(":")[2]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"zoom.lan:{port}", f"ZOOM.lan:{port}"):
        assert get(app, "/gradio_api/info", Host=host)[0] == 200, host
    for host in (f"evil.example:{port}", "evil.example", f"zoom.lan:{int(port) + 1}", f"127.0.0.2:{port}"):
        status, _, text = get(app, "/gradio_api/info", Host=host)
        assert status == 403 and text.count("\n") == 1, (host, text)
        assert f"Host {host} is not this server" in text


@pytest.mark.slow
def test_another_site_gets_no_answer_and_no_cors(app: str) -> None:
    port = app.rpartition(":")[2]
    for origin in (EVIL, "null", f"http://evil.example:{port}", f"http://127.0.0.1:{int(port) + 1}"):
        status, headers, text = get(app, "/gradio_api/info", Origin=origin)
        assert status == 403 and "another site" in text and text.count("\n") == 1, (origin, text)
        assert "access-control-allow-origin" not in headers
    own = f"http://127.0.0.1:{port}"
    status, headers, _ = get(app, "/gradio_api/info", Origin=own)
    assert status == 200 and headers.get("access-control-allow-origin") == own  # its own page, as before


@pytest.mark.slow
def test_null_and_odd_values_through_the_api_are_one_line(app: str) -> None:
    """What a client of the API sends in place of the page's choices: a sentence back, never a Python error."""
    from gradio_client import Client

    client = Client(app + "/", verbose=False)
    _, note, _ = client.predict("sample.jpg", api_name="/accept_bundled")
    assert note.startswith("sample.jpg: 451x300")
    good = ["0.5,0.5", 4, "chain", "bicubic", "", "null", "", "anchor"]
    for index, value, expected in [
        (1, None, "the magnification must be one of 4, 16, 64, 256, 1024, got None"),
        (0, None, "the centre must be two fractions"),
        (0, "1e999,0.5", "the centre must be two fractions"),
        (3, None, "no backbone None"),
        (5, None, "no prompter None"),
        (2, None, "the mode must be one of"),
        (4, "x" * 5000, "the backbone argument is 5,000 characters, over 4,096"),
    ]:
        values = list(good)
        values[index] = value
        status = client.predict(*values, api_name="/zoom")[0]
        assert status.startswith("**Cannot run:**") and expected in status and "\n" not in status, (value, status)


GOOD = {
    "upload": {"path": str(SAMPLE)},
    "center": "0.5,0.5",
    "scale": 16,
    "mode": "chain",
    "backbone": "bicubic",
    "backbone_argument": None,
    "prompter": "null",
    "prompter_argument": "",
    "consistency": "anchor",
}


def read(values: dict) -> object:
    from chainzoom.app.choices import choices
    from chainzoom.backbones import BACKBONES
    from chainzoom.prompts import PROMPTERS

    offered = {"backbones": choices(BACKBONES), "prompters": choices(PROMPTERS)}
    return read_request(*values.values(), **offered, modes=MODES, consistencies=CONSISTENCY)


def test_read_request_makes_the_job_the_page_asks_for() -> None:
    from chainzoom.app.jobs import Job

    assert read(GOOD) == Job(SAMPLE, 16.0, (0.5, 0.5), "chain", "bicubic", "null", "anchor")
    assert read({**GOOD, "mode": "bicubic"}) == Job(SAMPLE, 16.0, (0.5, 0.5), "bicubic", "bicubic", "null", "none")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"scale": None}, "the magnification must be one of"),
        ({"scale": 1e308}, "the magnification must be one of"),
        ({"scale": True}, "the magnification must be one of"),
        ({"scale": "16"}, "the magnification must be one of"),
        ({"center": None}, "the centre must be two fractions"),
        ({"center": "nan,0.5"}, "the centre must be two fractions"),
        ({"center": "2,0.5"}, "the centre must be two fractions"),
        ({"center": [0.5, 0.5]}, "the centre must be two fractions"),
        ({"backbone": None}, "no backbone None"),
        ({"backbone": ["bicubic"]}, "no backbone ['bicubic']"),
        ({"prompter": None}, "no prompter None"),
        ({"mode": None}, "the mode must be one of"),
        ({"consistency": {}}, "the consistency must be one of"),
        ({"backbone_argument": 3}, "the backbone argument must be text"),
        ({"prompter_argument": "x" * 10_000}, "the prompter argument is 10,000 characters"),
        ({"prompter_argument": "x"}, "'null' takes no argument"),
        ({"upload": None}, "Upload a photo"),
        ({"upload": {"path": None}}, "Upload a photo"),
    ],
)
def test_read_request_answers_every_odd_value_in_one_line(changes: dict, expected: str) -> None:
    answer = read({**GOOD, **changes})
    assert isinstance(answer, str) and expected in answer and "\n" not in answer, answer
