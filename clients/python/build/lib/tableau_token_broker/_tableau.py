"""Reading Tableau's REST error bodies (XML or JSON), shared by the TSC and requests adapters."""

from __future__ import annotations

import json
import re
from typing import Optional, Tuple

TABLEAU_AUTH = "X-Tableau-Auth"
#: Tableau's code for a token whose scopes do not cover the method (connected apps).
SCOPE_CODE = "401002"

_XML_CODE = re.compile(rb'<error[^>]*\bcode="(\d+)"')
_XML_SUMMARY = re.compile(rb"<summary>(.*?)</summary>", re.S)
_XML_DETAIL = re.compile(rb"<detail>(.*?)</detail>", re.S)


def error_of(body: bytes) -> Tuple[Optional[str], str, str]:
    """(code, summary, detail) of a Tableau error body; (None, "", "") when it has none."""
    if not body:
        return None, "", ""
    m = _XML_CODE.search(body)
    if m:
        summary = _XML_SUMMARY.search(body)
        detail = _XML_DETAIL.search(body)
        text = lambda x: x.group(1).decode("utf-8", "replace").strip() if x else ""  # noqa: E731
        return m.group(1).decode(), text(summary), text(detail)
    try:
        err = json.loads(body).get("error") or {}
        return (str(err["code"]) if "code" in err else None), str(err.get("summary", "")), str(err.get("detail", ""))
    except (ValueError, AttributeError, TypeError):
        return None, "", ""


def header(headers, name: str = TABLEAU_AUTH) -> Optional[str]:
    """A header's value, whatever the case of its name (TSC writes x-tableau-auth)."""
    if not headers:
        return None
    lower = name.lower()
    for k, v in headers.items():
        if k.lower() == lower:
            return v
    return None


def set_header(headers, value: str, name: str = TABLEAU_AUTH) -> None:
    lower = name.lower()
    for k in [k for k in headers if k.lower() == lower]:
        del headers[k]
    headers[name] = value


def scope_explanation(scopes, method: str, url: str, code: str, detail: str) -> str:
    asked = ", ".join(scopes) or "(none)"
    return (
        f"Tableau refused {method} {url} with {code}: the broker's token carries only the scopes "
        f"asked for ({asked}), and this call needs another. Ask for the scope it needs in "
        f"scopes=[...] (BrokerClient.resolve_scopes(methods=[...]) or `tableau-token-broker "
        f"scopes` tell which), and make sure the broker grants it to this caller "
        f"(BrokerClient.whoami()). Tableau said: {detail or 'no detail'}"
    )
