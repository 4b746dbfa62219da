"""Screenshots of the demo in a real browser, for the README (and the demo's acceptance).

Run while ``make demo`` is up (a few minutes after it started)::

    python -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    apt-get install chromium            # Debian's; Playwright's own download needs the internet
    /tmp/pw/bin/python docs/screenshots.py [http://127.0.0.1:3000]

Not part of the package or the test suite: it needs a browser this project does not install.
"""

import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGES = {
    "demo-binance-lineage.png": "/locations/crypto_pipelines/asset-groups/binance",
    "demo-trades-partitions.png": "/assets/binance/trades?view=partitions",
}


def main(base: str = "http://127.0.0.1:3000") -> None:
    out = Path(__file__).parent / "img"
    out.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        for name, path in PAGES.items():
            page.goto(base + path, wait_until="networkidle", timeout=60_000)
            time.sleep(4)
            skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit dialog
            if skip.count():
                skip.first.click()
            page.screenshot(path=out / name)
            print(out / name)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
