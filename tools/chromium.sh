#!/bin/sh
# The browser the console's tests drive: Debian's Chromium, through Playwright (which then
# downloads no browser of its own). Quick when one is there; installs it where apt-get can.
set -eu
python="${1:-python3}"  # the project's, for Playwright's own Chromium where no other is

if [ -n "${FULLKIT_CHROMIUM:-}" ]; then
    [ -x "$FULLKIT_CHROMIUM" ] && exit 0
    echo "make browser: FULLKIT_CHROMIUM=$FULLKIT_CHROMIUM is not an executable browser" >&2
    exit 1
fi
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root="sudo -n"
    else
        echo "make browser: Chromium is missing; as root run:" \
            "apt-get install -y --no-install-recommends chromium" >&2
        exit 1
    fi
    echo "make browser: installing Debian's chromium (once)"
    $as_root apt-get update -qq
    $as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends chromium
    exit 0
fi
case "$(uname -s)" in
    Darwin)
        for app in "/Applications/Google Chrome.app" "/Applications/Chromium.app"; do
            [ -d "$app" ] && exit 0  # tests/browser.py finds it there
        done
        # No distribution package on macOS: Playwright's own build of Chromium, once.
        echo "make browser: installing Playwright's Chromium (once)"
        exec "$python" -m playwright install chromium
        ;;
    *)
        echo "make browser: install Chromium with your package manager, or set" \
            "FULLKIT_CHROMIUM to a Chrome/Chromium binary" >&2
        ;;
esac
exit 1
