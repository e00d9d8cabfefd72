"""The documentation site: ``mkdocs build --strict`` passes (no broken link, anchor or reference), every registered
optimizer gets a card, and the pages render in headless Chromium, served over HTTP as a site would be."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import optarena
from tests.test_report import CHROMEDRIVER, CHROMIUM, INSTALL_HINT, PNG_MAGIC, _find

pytest.importorskip("mkdocs", reason='pip install -e ".[docs]"')

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def test_the_strict_build_has_a_card_for_every_optimizer(site: Path) -> None:
    for name in optarena.list_optimizers():
        page = (site / "optimizers" / name / "index.html").read_text(encoding="utf-8")
        assert f"<code>{name}</code>" in page and "bytes per parameter" in page
    card = (site / "optimizers" / "adaburst" / "index.html").read_text(encoding="utf-8")
    assert "θ ← θ − lr1·A − lr2·S" in card  # the update, from docs/algorithms/adaburst.md
    assert "8.00 bytes per parameter" in card  # AdamW's state: two fp32 moments
    assert "test_adaburst_method.py" in card and "adaburst-sgdm-cifar10" in card
    api = (site / "api" / "optim" / "index.html").read_text(encoding="utf-8")
    assert 'id="optarena.optim.adaburst.Adaburst"' in api and 'id="optarena.integrations' not in api
    assert 'id="optarena.integrations.lightning.OptarenaCallback"' in (
        site / "api" / "integrations" / "index.html"
    ).read_text(encoding="utf-8")


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[the algorithms](algorithms/missing.md)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: broken\ndocs_dir: {docs}\nstrict: true\ntheme:\n  name: material\n")
    done = build(config, tmp_path / "site")
    assert done.returncode != 0 and "algorithms/missing.md" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP on 127.0.0.1 (directory URLs need a server), stopped afterwards."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_the_site_renders_in_headless_chromium(served: str, tmp_path: Path) -> None:
    chromium, chromedriver = _find(CHROMIUM, "chromium", "chromium-browser"), _find(CHROMEDRIVER, "chromedriver")
    if chromium is None or chromedriver is None:
        pytest.fail(f"Missing chromium or chromedriver. {INSTALL_HINT}")  # never a skip, as tests/test_report.py
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    read = """return {
        title: document.title,
        h1: Array.from(document.querySelectorAll('article h1')).map(h => h.textContent.replace('¶', '').trim()),
        nav: Array.from(document.querySelectorAll('nav.md-nav a')).map(a => a.textContent.trim()),
        tables: document.querySelectorAll('article table').length,
        styled: getComputedStyle(document.querySelector('header.md-header')).position,
        api: Array.from(document.querySelectorAll('article a[href*="api/optim/"]')).map(a => a.href),
    };"""
    try:
        driver.set_page_load_timeout(30)
        driver.get(served + "/")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        home = driver.execute_script(read)
        assert home["h1"] == ["optarena"] and home["styled"] in ("sticky", "fixed")  # Material's CSS loaded
        assert {"Optimizers", "optarena.integrations", "Training frameworks", "Results as data"} <= set(home["nav"])
        driver.get(served + "/optimizers/adaburst/")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        card = driver.execute_script(read)
        assert card["h1"][0].startswith("adaburst") and card["tables"] >= 5
        assert card["title"].startswith("adaburst")
        assert driver.save_screenshot(str(tmp_path / "card.png"))
        (link,) = card["api"]  # the class, in the API reference generated from its docstring
        driver.get(link)
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        target = driver.execute_script("return document.getElementById(location.hash.slice(1))?.textContent ?? null")
        assert target is not None and "Adaburst" in target
    finally:
        driver.quit()
    assert (tmp_path / "card.png").read_bytes().startswith(PNG_MAGIC)
