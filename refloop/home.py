"""The pages a person finds at the server's root: `/` says what Refloop is and links to the SMART
app's launch, the FHIR facade and the documentation; `/docs/` serves the project's README and
docs/ pages as text (from a clone or an editable install; absent otherwise)."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, Response, abort

if TYPE_CHECKING:
    from refloop.core_services import Services

ROOT = Path(__file__).resolve().parent.parent
DOC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.md$")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Refloop</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;
color:#1d2733}}a{{color:#1f5fa8}}code{{background:#eef3f9;padding:0 .2rem}}</style></head>
<body><main>
<h1>Refloop</h1>
<p>Refloop is a FHIR-native referral integration server: it detects referrals in EHRs (FHIR
Subscriptions, HL7 v2 over MLLP), tracks each one through a single lifecycle as a FHIR Task,
handles prior authorization (Da Vinci PAS), patient outreach and scheduling, and closes the loop
with the consult note back at the referring clinician.</p>
<h2>Open it</h2>
<ul>
{launch}
<li>The FHIR facade: <a href="/fhir/metadata">CapabilityStatement</a>; <code>/fhir/Task</code>
answers with a bearer token (<code>refloop clients add</code>, <code>refloop clients
token</code>).</li>
<li>The documentation: <a href="/docs/">README and docs/</a>.</li>
</ul>
</main></body></html>
"""


def home_routes(app: Flask, services: Services) -> None:
    @app.get("/")
    def home() -> Response:
        return Response(PAGE.format(launch=_launch_item(services)), mimetype="text/html")

    @app.get("/docs/")
    def docs_index() -> Response:
        pages = _doc_pages()
        if not pages:
            abort(404)
        items = "".join(f'<li><a href="/docs/{escape(n)}">{escape(n)}</a></li>' for n in pages)
        return Response(f"<!doctype html><html lang='en'><head><title>Refloop docs</title>"
                        f"</head><body><h1>Refloop documentation</h1><ul>{items}</ul>"
                        "</body></html>", mimetype="text/html")

    @app.get("/docs/<name>")
    def docs_page(name: str) -> Response:
        path = _doc_pages().get(name)
        if path is None:
            abort(404)
        return Response(path.read_text(encoding="utf-8"), mimetype="text/plain")


def _launch_item(services: Services) -> str:
    demo = str((services.settings.section("smart") or {}).get("demo_ehr") or "")
    how = ("<li>The SMART app for coordinators opens from an EHR, which calls "
           "<code>/smart/launch</code> with its <code>iss</code> and a <code>launch</code> "
           "(<code>refloop smart client-config</code> prints what to register).</li>")
    if not demo:
        return how
    root = escape(demo.removesuffix("/fhir"), quote=True)
    return (f'<li><a href="{root}/launch-refloop">Open the coordinator\'s worklist</a> through '
            "an EHR launch from the demo EHR.</li>" + how)


def _doc_pages() -> dict[str, Path]:
    found = {"README.md": ROOT / "README.md"} if (ROOT / "README.md").is_file() else {}
    docs = ROOT / "docs"
    if docs.is_dir():
        found |= {p.name: p for p in sorted(docs.glob("*.md")) if DOC_NAME.match(p.name)}
    return found
