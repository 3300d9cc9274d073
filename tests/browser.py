"""Open a report in a real browser (Debian's chromium, driven by playwright) and check it.

Used by tests/test_report_browser.py; also a command line::

    python tests/browser.py runs/demo-.../index.html /tmp/report.png

The browser is the system's chromium (``apt-get install chromium``; ``make browser`` does it),
never one downloaded by ``playwright install``. ``ADVINTERP_CHROMIUM`` overrides its path.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

CHROMIUM = os.environ.get("ADVINTERP_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}

# Everything measured in the page, in one evaluation (after every image has decoded).
_INSPECT = """async () => {
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
  const vw = window.innerWidth;
  const describe = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
      (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '');
  const toc = [...document.querySelectorAll('nav#contents a')].map(a => a.getAttribute('href') || '');
  return {
    images: [...document.images].map(i => ({alt: i.alt, naturalWidth: i.naturalWidth})),
    tocTargets: toc.map(h => ({href: h, exists: h.startsWith('#') &&
                               !!document.getElementById(decodeURIComponent(h.slice(1)))})),
    sections: [...document.querySelectorAll('section')].map(s => ({
        id: s.id, title: (s.querySelector('h2') || {textContent: ''}).textContent.trim()})),
    tables: [...document.querySelectorAll('table')].map(t => ({
        caption: (t.closest('section') || {id: '?'}).id,
        rows: t.tBodies.length ? [...t.tBodies].reduce((n, b) => n + b.rows.length, 0) : t.rows.length})),
    scrollWidth: document.documentElement.scrollWidth,
    tooWide: [...document.body.querySelectorAll('*')]
        .filter(e => !e.closest('.table-wrap'))
        .filter(e => { const r = e.getBoundingClientRect(); return r.right > vw + 0.5 || r.left < -0.5; })
        .slice(0, 10).map(describe),
  };
}"""


def browser_unavailable() -> str | None:
    """Why the browser check cannot run here (``None`` when it can)."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM} (`make browser`, i.e. apt-get install chromium, as root)"
    return None


def check_report(html_path: str | Path, screenshot_path: str | Path,
                 expect_sections: list[str] | None = None) -> dict:
    """Open ``html_path`` at 1280x900 in headless chromium, check it, save a full-page screenshot.

    Asserts: no console errors, page errors or requests to anything but file:/data: URLs;
    every image decoded (naturalWidth > 0); every table-of-contents link points at an existing
    id; every title in ``expect_sections`` is a section heading; every table has a body row;
    nothing wider than the viewport outside ``.table-wrap`` (documentElement.scrollWidth <= 1280).
    The screenshot is saved before the assertion, so it is there to look at when one fails.

    Returns the counts: ``images``, ``tables``, ``sections``, ``toc_links``, ``scroll_width``.
    """
    from playwright.sync_api import sync_playwright

    url = Path(html_path).resolve().as_uri()
    screenshot_path = Path(screenshot_path)
    screenshot_path.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    external: list[str] = []
    with sync_playwright() as p:
        # launch() gives the browser a fresh temporary profile (user-data dir) and removes it after.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else external.append(r.url))
            page.goto(url, wait_until="load")
            info = page.evaluate(_INSPECT)
            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            browser.close()

    titles = [s["title"] for s in info["sections"]]
    problems = errors + [f"external request: {u}" for u in external]
    problems += [f"image not rendered: {i['alt']!r}" for i in info["images"] if not i["naturalWidth"] > 0]
    problems += [f"table of contents link without target: {t['href']}" for t in info["tocTargets"] if not t["exists"]]
    problems += [f"expected section missing: {t!r} (have {titles})" for t in expect_sections or [] if t not in titles]
    problems += [f"table without rows in section {t['caption']}" for t in info["tables"] if t["rows"] < 1]
    if info["scrollWidth"] > VIEWPORT["width"]:
        problems.append(f"page is {info['scrollWidth']} px wide (> {VIEWPORT['width']}); too wide: {info['tooWide']}")
    if not info["tocTargets"]:
        problems.append("no table of contents")
    assert not problems, f"{html_path} (screenshot {screenshot_path}):\n  " + "\n  ".join(problems)
    return {"images": len(info["images"]), "tables": len(info["tables"]), "sections": len(info["sections"]),
            "toc_links": len(info["tocTargets"]), "scroll_width": info["scrollWidth"]}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/browser.py INDEX_HTML SCREENSHOT_PNG")
    print(json.dumps(check_report(sys.argv[1], sys.argv[2]), indent=2))
