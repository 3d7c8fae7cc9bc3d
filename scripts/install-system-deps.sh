#!/usr/bin/env bash
# Install the X server and X client libraries napari's Qt needs to run headless
# (Xvfb). Idempotent: does nothing when everything is present. apt-get only as root.
set -euo pipefail
# Windows and macOS draw through their own display server: nothing to install
[ "$(uname -s 2>/dev/null)" = Linux ] || exit 0

pkgs=(xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
      libxkbcommon-x11-0 libxcb-xinerama0 libxcb-randr0 libxcb-shape0 libxcb-cursor0
      libegl1 libgl1 libdbus-1-3 libfontconfig1)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "missing system packages (${missing[*]}); install them with your package manager" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}" >&2
    echo "run: sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
