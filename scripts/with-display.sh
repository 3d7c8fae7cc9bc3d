#!/usr/bin/env bash
# Run a GUI command on the real screen, or under a virtual one (Xvfb) when there is
# no screen (Linux servers, CI). Windows and macOS always have their own display
# server (napari draws through it, not X11), so the command runs directly there.
# Usage: scripts/with-display.sh <command> [args...]
set -euo pipefail
case "$(uname -s 2>/dev/null || echo unknown)" in
    Darwin | MINGW* | MSYS* | CYGWIN* | Windows_NT) exec "$@" ;;
esac
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
    exec "$@"
fi
if ! command -v xvfb-run >/dev/null; then
    echo "no screen and no xvfb-run: run 'make system-deps' as root first" >&2
    exit 2
fi
exec xvfb-run -a -s "-screen 0 1920x1200x24" "$@"
