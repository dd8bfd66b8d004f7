"""Credentials out of everything a run writes: manifests, prompt caches, logs, error messages.

A spec such as ``openai:http://user:pw@host/v1?token=SECRET,model=m`` is the user's own
words, and the natural thing to record; but it can carry a password or a token, and a
run folder is made to be shared. :func:`redact_spec` and :func:`redact_url` keep what
makes the record useful (scheme, host, port, path, every other option) and replace each
credential with ``***``, so a reader still sees *that* one was given:
``openai:http://***@host/v1?token=***,model=m``.

What counts as a credential:

- the user-info of a URL (``user:password@``, or a bare token as user name);
- the value of a query or fragment parameter, or of a spec option, whose name is a
  credential word (token, key, api_key, apikey, secret, password, passwd, pwd, pass,
  auth, access_token, sig, signature, credential(s)) or ends with one after ``_``,
  ``-`` or ``.`` (``x-api-key``, ``client_secret``, ``X-Amz-Signature``); ``key_env``
  or ``max_tokens`` name no credential and stay.

Where a URL is ambiguous, more is hidden rather than less: a password written with a raw
``/``, ``?`` or ``#`` (an invalid URL, but one a user may still type) hides everything
up to the URL's last ``@``.
"""

from __future__ import annotations

import re

#: What replaces each credential.
MASK = "***"

_SECRET_WORDS = "access_token|api_key|apikey|token|key|secret|password|passwd|pwd|pass|auth|sig|signature|credentials?"
#: A parameter name that is a credential word, or ends with one after a separator.
_SECRET_NAME = rf"(?:[\w.-]*[_.-])?(?:{_SECRET_WORDS})"
_SECRET_NAME_RE = re.compile(_SECRET_NAME, re.IGNORECASE)
#: A credential parameter in a query or fragment: its value runs to the next ``&`` or
#: ``#`` (past a ``;`` or a blank, so a value holding one is hidden whole).
_SECRET_PARAM_RE = re.compile(rf"(?<=[?&;#])({_SECRET_NAME})=[^&#]*", re.IGNORECASE)
#: ``host``, ``host:port`` or ``[v6]:port``: an authority without user-info.
_HOST_PORT_RE = re.compile(r"(?:\[[^\]]*\]|[^:\[\]]*)(?::\d*)?")
#: ``user:password`` before an ``@`` with no ``//`` before it (not a Windows path, not prose).
_BARE_USERINFO_RE = re.compile(r"[^\s\\:]*:[^\s\\]*")


def redact_url(url: str) -> str:
    """``url`` with its user-info and credential parameters replaced by ``***``.

    Safe on any text: a string that is no URL comes back unchanged unless it holds
    something shaped like a credential (``user:pw@host``, ``?token=...``).
    """
    return _SECRET_PARAM_RE.sub(lambda match: f"{match.group(1)}={MASK}", _redact_userinfo(url))


def redact_spec(spec: str) -> str:
    """A component spec (``name:ARGUMENT,key=value,...``) safe to write anywhere.

    The spec's first part and every option value are redacted as URLs (an option may
    hold one); an option whose name is a credential word keeps only its name. Options
    are split at commas as :func:`chainzoom.registry.split_options` splits them, so a
    URL's query ends at the first comma here as it does there.
    """
    head, *options = spec.split(",")
    name, colon, argument = head.partition(":")
    if colon and not argument.startswith("//"):
        head = f"{name}:{redact_url(argument)}"  # keep the component's name out of a bare ``user:pw@host``
    else:
        head = redact_url(head)
    return ",".join([head, *(_redact_option(option) for option in options)])


def _redact_option(option: str) -> str:
    key, equals, value = option.partition("=")
    if equals and _SECRET_NAME_RE.fullmatch(key.strip()):
        return f"{key}={MASK}"
    return f"{key}{equals}{redact_url(value)}" if equals else redact_url(option)


def _redact_userinfo(url: str) -> str:
    """Hide everything before the ``@`` that ends a URL's user-info, if it has one."""
    slashes = url.find("//")
    start = slashes + 2 if slashes >= 0 else 0
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found >= 0:
            end = min(end, found)
    authority = url[start:end]
    at = url.rfind("@", start, end)
    if slashes < 0 and not _BARE_USERINFO_RE.fullmatch(url[: max(at, 0)]):
        return url  # no ``//``: only a bare ``user:password@host`` is a URL's user-info
    if at < 0 and not _HOST_PORT_RE.fullmatch(authority) and ":" in authority:
        # ``user:pa/ss@host``: no valid host before the first ``/``, so a raw password
        # probably runs on; hide up to the last ``@`` of the URL.
        at = url.rfind("@", end)
    if at < 0:
        return url
    return url[:start] + MASK + url[at:]
