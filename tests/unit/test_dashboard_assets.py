"""The dashboard's assets ship in the package and load nothing from the network (no CDN).

Every file the page loads is in ``taskmesh/master/dashboard/static`` (which the package data
``master/dashboard/static/*`` puts in the wheel; the installed-wheel test checks the files
arrive), every module import and every ``src``/``href`` of the page resolves to one of those
files, and no asset names a remote address.
"""

from __future__ import annotations

import re
from pathlib import Path

from taskmesh.master.dashboard.routes import STATIC_DIR, STATIC_PREFIX

ASSETS = sorted(path for path in STATIC_DIR.iterdir() if path.is_file())
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML name, never fetched
REMOTE = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)
# ``import {...} from "x"`` (over several lines too), ``import "x"`` and ``import("x")``.
IMPORT = re.compile(
    r"""^(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']|^import\s*["']([^"']+)["']"""
    r"""|\bimport\(\s*["']([^"']+)["']""",
    re.MULTILINE | re.DOTALL,
)
PAGE_LINK = re.compile(r"""(?:src|href)="([^"]+)\"""")


def test_the_assets_are_html_css_and_javascript_modules() -> None:
    assert {path.suffix for path in ASSETS} == {".html", ".css", ".js"}
    assert (STATIC_DIR / "index.html") in ASSETS


def test_no_asset_names_a_remote_address() -> None:
    for path in ASSETS:
        text = path.read_text().replace(SVG_NAMESPACE, "")
        assert not REMOTE.search(text), f"{path.name}: {REMOTE.search(text)}"


def test_every_module_import_resolves_to_a_shipped_file() -> None:
    for path in ASSETS:
        if path.suffix != ".js":
            continue
        for target in (next(filter(None, m)) for m in IMPORT.findall(path.read_text())):
            assert target.startswith("./"), f"{path.name} imports {target!r}: not a local module"
            assert (STATIC_DIR / target).resolve().is_file(), f"{path.name} imports {target}"


def test_the_page_loads_only_shipped_files() -> None:
    links = PAGE_LINK.findall((STATIC_DIR / "index.html").read_text())
    assert links, "the page links no assets"
    prefix = STATIC_PREFIX.lstrip("/") + "/"
    for link in links:
        assert link.startswith(prefix), link
        assert (STATIC_DIR / Path(link).relative_to(prefix)).is_file(), link
