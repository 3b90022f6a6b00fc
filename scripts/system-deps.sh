#!/usr/bin/env bash
# System packages go2train needs besides Python wheels (Debian/Ubuntu names):
#   libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri  headless rendering of videos (EGL + Mesa)
#   tmux                                             the status TUI's real-terminal test
# Installs what is missing when run as root with apt-get; otherwise says what to install and
# carries on (rendering and that one test then fail/skip with a clear message).
set -u
pkgs="libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri tmux"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages:$missing"
  (apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null; }) \
    || echo "warning: could not install:$missing" >&2
else
  echo "warning: please install these system packages:$missing" >&2
fi
exit 0
