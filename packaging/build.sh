#!/usr/bin/env bash
# Build Iris as a PyInstaller onedir bundle.
#
#   packaging/build.sh [OUT_DIR]        (default: $IRIS_BUILD_DIR, else ../iris-build beside the repo)
#
# Result: OUT_DIR/dist/iris/iris (the app) and OUT_DIR/dist/iris/iris-export (the exporter CLI);
# macOS also gets OUT_DIR/dist/Iris.app. Build output never goes inside the repository.
# PYTHON picks the interpreter (default python3); it needs the app installed: pip install -e .
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${IRIS_BUILD_DIR:-$(dirname "$ROOT")/iris-build}}"
PYTHON="${PYTHON:-python3}"
PYINSTALLER_REQUIREMENT="pyinstaller>=6.10,<7"

OUT="$("$PYTHON" -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$OUT")"
case "$OUT/" in
  "$ROOT"/*) echo "build.sh: $OUT is inside the repository; pick a folder outside it." >&2; exit 2 ;;
esac

if ! "$PYTHON" -c "import PySide6, onnxruntime, onnx, numpy, tokenizers, huggingface_hub, jinja2, PIL" 2>/dev/null; then
  echo "build.sh: $PYTHON lacks the app's dependencies; run: $PYTHON -m pip install -e \"$ROOT\"" >&2
  exit 2
fi
if ! "$PYTHON" -m PyInstaller --version >/dev/null 2>&1; then
  echo "build.sh: installing $PYINSTALLER_REQUIREMENT"
  "$PYTHON" -m pip install -q "$PYINSTALLER_REQUIREMENT"
fi

mkdir -p "$OUT"
start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
  --distpath "$OUT/dist" --workpath "$OUT/work" "$ROOT/packaging/iris.spec"
seconds=$(( $(date +%s) - start ))
echo "Built $OUT/dist/iris in ${seconds} s: $(du -sh "$OUT/dist/iris" | cut -f1)"
