#!/usr/bin/env bash
# System packages the tests need: redis-server (tests start their own instances on loopback),
# chromium + chromedriver (the explorer's headless-browser tests).
# Installs with apt-get only when missing, so it is quick on a machine that has them.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)  # helm for the chart checks comes from an npm package

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
    echo "system-deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
redis-server --version
