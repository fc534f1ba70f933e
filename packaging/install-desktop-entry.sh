#!/usr/bin/env bash
# Linux: put the built Iris bundle in the desktop's launcher (and "Open with" for images) for the
# current user, so it starts with a double-click. Nothing outside ~/.local/share is touched.
#
#   packaging/install-desktop-entry.sh [BUNDLE_DIR]   BUNDLE_DIR holds the built `iris` program
#                                                     (default: the folder packaging/build.sh makes)
#   packaging/install-desktop-entry.sh --uninstall
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
APPS="$DATA_HOME/applications"
ICONS="$DATA_HOME/icons/hicolor"
ENTRY="$APPS/iris.desktop"   # the name matches the app's desktopFileName, so docks group its windows
ICON="$ICONS/scalable/apps/iris.svg"

refresh_caches() {
  # Optional tools: without them the launcher still finds the entry, only "Open with" may lag.
  if command -v update-desktop-database >/dev/null; then update-desktop-database -q "$APPS" || true; fi
  if command -v gtk-update-icon-cache >/dev/null && [ -f "$ICONS/index.theme" ]; then
    gtk-update-icon-cache -q -t "$ICONS" || true
  fi
}

if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$ENTRY" "$ICON"
  refresh_caches
  echo "Removed Iris from the launcher (the model and your conversations stay in $DATA_HOME/Iris)."
  exit 0
fi

BUNDLE="${1:-${IRIS_BUILD_DIR:-$(dirname "$ROOT")/iris-build}/dist/iris}"
if ! BUNDLE="$(cd "$BUNDLE" 2>/dev/null && pwd)" || [ ! -x "$BUNDLE/iris" ]; then
  echo "install-desktop-entry.sh: no built app at ${1:-$BUNDLE}/iris; build it first: packaging/build.sh" >&2
  exit 2
fi
APP="$BUNDLE/iris"
case "$APP" in
  *[\"\`\$\\%]*)
    echo "install-desktop-entry.sh: move the bundle to a folder whose path has none of \" \` \$ \\ %" \
         "(a desktop entry cannot run it from $APP)" >&2
    exit 2 ;;
esac

# Prefer the bundle's own copies, so an installed bundle needs no repository beside it.
RESOURCES="$BUNDLE/_internal/resources"
[ -f "$RESOURCES/iris.desktop" ] || RESOURCES="$ROOT/resources"

mkdir -p "$APPS" "$(dirname "$ICON")"
cp "$RESOURCES/iris.svg" "$ICON"
APP="$APP" awk '
  /^TryExec=/ { next }
  /^Exec=/    { print "Exec=\"" ENVIRON["APP"] "\" %F"; print "TryExec=" ENVIRON["APP"]; next }
  { print }
' "$RESOURCES/iris.desktop" > "$ENTRY.tmp"
mv "$ENTRY.tmp" "$ENTRY"
chmod 644 "$ENTRY" "$ICON"
refresh_caches
echo "Installed $ENTRY (runs $APP) and $ICON."
