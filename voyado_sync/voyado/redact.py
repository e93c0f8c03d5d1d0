"""Redaction of secrets in text a server sent back: the API key and proxy credentials.

An error page may echo what it received: the ``apikey`` header inside a JSON string (with
``"``, ``\\`` and ``/`` escaped, or every non-ASCII or even every character as ``\\uXXXX``,
as .NET's encoder does for ``+``), URL-encoded (``%2B`` or ``%2b``, ``+`` for a space),
HTML-escaped, base64-encoded, or a proxy's 407 page showing the ``user:password`` it got
(decoded, or as the ``Basic`` token). ``Redactor`` replaces every such form by ``***``.

Each character of a secret is matched as itself or as any of its escapes, so one pattern covers
every mixture of raw, JSON-escaped (one layer or several), URL-encoded and HTML-escaped text.
Base64 is matched for the whole secret only (std and URL-safe alphabets, with or without
padding): a secret inside a larger base64 blob is not found unless aligned.
"""

from __future__ import annotations

import base64
import re
import urllib.request
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

__all__ = ["Redactor", "proxy_secrets"]

MASK = "***"
_HTML_NAMED = {'"': "&quot;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;"}
_JSON_SHORT = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}


def _hex(value: int, width: int) -> str:
    # Either case of hex digit: %2B and %2b, \u002B and \u002b.
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in f"{value:0{width}x}")


def _char(c: str) -> str:
    cp = ord(c)
    alts = [re.escape(c)]
    if cp < 0x10000:
        alts.append(r"\\+u" + _hex(cp, 4))
    else:  # a JSON surrogate pair
        hi, lo = divmod(cp - 0x10000, 0x400)
        alts.append(r"\\+u" + _hex(0xD800 + hi, 4) + r"\\+u" + _hex(0xDC00 + lo, 4))
    if c in '"\\/':
        alts.append(r"\\+" + re.escape(c))
    if c in _JSON_SHORT:
        alts.append(r"\\+" + _JSON_SHORT[c])
    alts.append("".join("%" + _hex(b, 2) for b in c.encode()))
    if c == " ":
        alts.append(r"\+")
    if c in _HTML_NAMED:
        alts.append(re.escape(_HTML_NAMED[c]))
    alts.append(f"&#0*{cp};")
    alts.append("&#[xX]0*" + _hex(cp, 1) + ";")
    return "(?:" + "|".join(alts) + ")"


def _base64_forms(secret: str) -> list[str]:
    raw = secret.encode()
    forms = set()
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        forms.add(text)
        forms.add(text.rstrip("="))
    return sorted(forms, key=len, reverse=True)


class Redactor:
    """Replaces each of ``secrets`` (in every encoding above) by ``***`` in a text.

    Secrets shorter than ``min_length`` are matched in their base64 form only: masking every
    ``ab`` in a message would destroy it for little gain.
    """

    __slots__ = ("_pattern",)  # no vars() dump shows the secrets the pattern is made of

    def __init__(self, secrets: Iterable[str], *, min_length: int = 3) -> None:
        parts: list[str] = []
        for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
            if len(secret) >= min_length:
                parts.append("".join(_char(c) for c in secret))
            if len(secret) >= 2:
                parts.extend(re.escape(form) for form in _base64_forms(secret))
        self._pattern = re.compile("|".join(parts)) if parts else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def __repr__(self) -> str:
        return "Redactor(***)"


def proxy_secrets(proxy_urls: Iterable[str] | None = None) -> list[str]:
    """The secrets in proxy URLs (``http://user:password@host``): the password, and
    ``user:password`` as a ``Basic`` token would carry it. By default, the proxy environment
    variables httpx reads (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, any case)."""
    if proxy_urls is None:
        proxy_urls = urllib.request.getproxies_environment().values()
    out: list[str] = []
    for url in proxy_urls:
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            user, password = parts.username, parts.password
        except ValueError:
            continue
        if password:
            out.extend([unquote(password), password])
            out.append(f"{unquote(user or '')}:{unquote(password)}")
        elif user:
            out.append(unquote(user))  # a token given as the user name
    return out
