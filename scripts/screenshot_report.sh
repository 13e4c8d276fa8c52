#!/usr/bin/env bash
# Render a tsanomaly HTML report in headless Chromium and save a PNG screenshot, to check by eye
# that the page (summary, alert table, embedded plots) renders in a real browser.
#
# Usage:
#   scripts/screenshot_report.sh [REPORT.html] [OUT.png] [WIDTHxHEIGHT]
#
# With no REPORT (or ""), it builds one first: a synthetic failed-login panel, `tsanomaly fit` on
# three weeks and `tsanomaly report` on the last one (baseline detector unless DETECTOR=stl|mp is
# set), and keeps it beside the screenshot (OUT with .html).
# Installs Chromium with apt-get when it is missing (Debian/Ubuntu, as root). The test suite never
# needs this script: tests check the HTML itself.
set -euo pipefail

# The file:// URL of a file, percent-encoded: a path with "#", "%", "?" or a space pasted after
# file:// names another file ("#" starts a fragment, "%20" is a space) or none.
file_url() {
    python3 -c 'import sys; from pathlib import Path; print(Path(sys.argv[1]).resolve().as_uri())' "$1"
}

# Sourced (the tests do, to check file_url): define the functions, run nothing.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    return 0
fi

REPORT="${1:-}"
OUT="${2:-report.png}"
SIZE="${3:-1280x2400}"
DETECTOR="${DETECTOR:-baseline}"

# A report named but absent would otherwise be "screenshotted" as Chromium's error page (or fail
# on its folder) and still say "written": check it before installing or launching anything.
if [[ -n "$REPORT" && ! -f "$REPORT" ]]; then
    echo "no such report: $REPORT" >&2
    exit 2
fi

find_chromium() {
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if ! CHROME="$(find_chromium)"; then
    echo "Chromium not found; installing it with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    CHROME="$(find_chromium)"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ -z "$REPORT" ]]; then
    REPORT="$WORK/report.html"
    python3 - "$WORK" <<'PY'
import sys
from pathlib import Path

from tsanomaly.datasets import make_security_panel

work = Path(sys.argv[1])
data = make_security_panel(n_contexts=80, n_days=28, seed=3)
history, new = data.split("2024-01-22")
history.panels["failed_logins"].to_frame(value="failed_logins", time="ts").to_parquet(work / "history.parquet", index=False)
new.panels["failed_logins"].to_frame(value="failed_logins", time="ts").to_parquet(work / "today.parquet", index=False)
PY
    tsanomaly fit --input "$WORK/history.parquet" --context country,asn --time ts --value failed_logins \
        --detector "$DETECTOR" --save "$WORK/model.tsa"
    tsanomaly report --model "$WORK/model.tsa" --input "$WORK/today.parquet" --history "$WORK/history.parquet" \
        --out "$REPORT" --top 5 --title "failed logins per (country, ASN): screenshot check"
fi

REPORT_ABS="$(cd "$(dirname "$REPORT")" && pwd)/$(basename "$REPORT")"
OUT_ABS="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"

# A throwaway profile and no network chatter: the report is self-contained, nothing needs fetching.
"$CHROME" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$WORK/profile" --hide-scrollbars \
    --screenshot="$OUT_ABS" --window-size="${SIZE/x/,}" "$(file_url "$REPORT_ABS")" 2>"$WORK/chromium.log" || {
    echo "Chromium failed; its log:" >&2
    cat "$WORK/chromium.log" >&2
    exit 1
}
if [[ "$REPORT" == "$WORK/report.html" ]]; then
    cp "$REPORT" "${OUT_ABS%.png}.html"  # keep the generated report beside its screenshot
    REPORT_ABS="${OUT_ABS%.png}.html"
fi
echo "screenshot of $REPORT_ABS written to $OUT_ABS"
