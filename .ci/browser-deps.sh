#!/usr/bin/env bash
# Debian's Chromium for the app's browser test (tests/app/test_browser.py, marker `browser`).
# Playwright drives /usr/bin/chromium through `executable_path`; no browser is downloaded
# (`playwright install` is never run). Idempotent: does nothing when chromium is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    echo "browser-deps: $(chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "browser-deps: installed $(chromium --version 2>/dev/null || echo chromium)"
