#!/usr/bin/env bash
# The Debian packages the test suite needs, installed only when missing (root or sudo; apt-get):
#   chromium     the real-time browser test drives the page in headless Chromium with a fake microphone
#   libsndfile1  soundfile's system library (its wheels bundle one; this is the fallback)
# Run by the README's test command and therefore by CI; a no-op when both are already installed.
set -euo pipefail

PACKAGES=(chromium libsndfile1)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need ${missing[*]} and this is not a Debian-like system (no apt-get): install them with" \
       "your package manager (Chromium must be on PATH as chromium or chromium-browser)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "error: installing ${missing[*]} needs root: run this as root or install sudo" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
