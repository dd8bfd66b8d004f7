"""Credentials are masked in specs and URLs, and nothing else is touched."""

from __future__ import annotations

import pytest

from chainzoom.secrets import redact_spec, redact_url

MASKED_SPECS = [
    ("openai:http://host/v1?token=SECRET,model=X", "openai:http://host/v1?token=***,model=X"),
    ("openai:http://user:SECRET@host/v1,model=X", "openai:http://***@host/v1,model=X"),
    ("openai:https://ghp_SECRET@host/v1,model=X", "openai:https://***@host/v1,model=X"),  # a bare token as user
    (
        "openai:https://user:SECRET@api.example.com:8443/v1?api-version=2&key=SECRET,model=X",
        "openai:https://***@api.example.com:8443/v1?api-version=2&key=***,model=X",
    ),
    (
        "openai:http://[::1]:8000/v1?a=1;Api_Key=SECRET;x&b=2,model=m",
        "openai:http://[::1]:8000/v1?a=1;Api_Key=***&b=2,model=m",
    ),
    ("openai:http://host/v1?access_token=SECRET word,model=m", "openai:http://host/v1?access_token=***,model=m"),
    (
        "openai:http://host/v1#access_token=SECRET&state=1,model=m",
        "openai:http://host/v1#access_token=***&state=1,model=m",
    ),
    # a raw "/", "#" or "@" in a password: everything up to the last "@" goes
    ("openai:http://user:pa/SECRET@host/v1,model=m", "openai:http://***@host/v1,model=m"),
    ("openai:http://user:pa#SECRET@host/v1,model=m", "openai:http://***@host/v1,model=m"),
    ("openai:http://user:p@SECRET@host/v1,model=m", "openai:http://***@host/v1,model=m"),
    ("openai:user:SECRET@host:8000/v1,model=m", "openai:***@host:8000/v1,model=m"),  # no scheme
    # options: a credential-named option keeps its name; a URL in an option is a URL
    (
        "plug:x,api_key=SECRET,X-Api-Key=SECRET,client_secret=SECRET,password=SECRET",
        "plug:x,api_key=***,X-Api-Key=***,client_secret=***,password=***",
    ),
    (
        "vlm:Qwen/Qwen2.5-VL,adapter=https://user:SECRET@hf.co/a?X-Amz-Signature=SECRET&v=1",
        "vlm:Qwen/Qwen2.5-VL,adapter=https://***@hf.co/a?X-Amz-Signature=***&v=1",
    ),
    ("http://user:SECRET@host/v1?sig=SECRET", "http://***@host/v1?sig=***"),  # a bare URL as spec
]

UNCHANGED_SPECS = [
    "openai:http://localhost:8000/v1,model=Qwen/Qwen2.5-VL-3B-Instruct,max_tokens=16,key_env=MY_KEY",
    "openai:http://[::1]:8000/v1?api-version=2024-02-01,model=m",
    "openai:https://host/v1/models/m@v2,model=m",  # an "@" in a path after a valid host
    "spandrel:models/4x@2.pth,tile=256",
    "spandrel:C:\\models\\x:y@2.pth",
    "fixed:a cat on a sofa",
    "fixed:user: me@home",
    "labels",
    "",
]


@pytest.mark.parametrize(("spec", "expected"), MASKED_SPECS)
def test_credentials_in_a_spec_are_masked(spec, expected):
    assert redact_spec(spec) == expected
    assert "SECRET" not in expected
    assert redact_spec(expected) == expected  # masking twice changes nothing


@pytest.mark.parametrize("spec", UNCHANGED_SPECS)
def test_a_spec_without_credentials_is_kept_as_written(spec):
    assert redact_spec(spec) == spec


def test_a_url_is_masked_as_a_whole():
    assert redact_url("http://u:SECRET@host:80/v1/chat/completions?token=SECRET") == (
        "http://***@host:80/v1/chat/completions?token=***"
    )
    # alone, a URL's query runs past commas (in a spec, a comma starts the next option)
    assert redact_url("http://host/v1?token=SECRET,more&max_tokens=8") == "http://host/v1?token=***&max_tokens=8"
    assert redact_url("http://host:8000/v1") == "http://host:8000/v1"
    assert redact_url("not a url at all") == "not a url at all"


def test_no_credential_reaches_a_run_folder(tmp_path, capsys):
    """An endpoint spec with a token and a password: the manifest, prompts.json and the
    saved request hold neither (the run fails to connect, which is not the point here)."""
    from chainzoom.cli import main
    from chainzoom.config import ZoomConfig, identity

    spec = "openai:http://user:hunter2@127.0.0.1:9/v1?token=SECRET,model=m,retries=0,timeout=0.2"
    config = ZoomConfig(inputs=("x.png",), prompter=spec, backbone="bicubic")
    text = str(identity(config))
    assert "hunter2" not in text and "SECRET" not in text and "127.0.0.1:9" in text
    out = tmp_path / "o"
    code = main(
        [
            "zoom",
            "assets/sample.jpg",
            "--scale",
            "4",
            "--backbone",
            "bicubic",
            "--device",
            "cpu",
            "--prompter",
            spec,
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "SECRET" not in err and err.count("\n") == 1
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"hunter2" not in data and b"SECRET" not in data, path
