#!/usr/bin/env bash
# Build the wheel and the sdist, install each into a fresh virtual environment (no
# site packages of this machine) and run `minstf demo` from outside the checkout: the
# shipped weights must travel with the package. Used by .ci/run; run it by hand with
#     bash tools/check_install.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m build --wheel --sdist -o "$work/dist" "$root" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
for kind in whl tar.gz; do
    python3 -m venv "$work/venv-$kind"
    "$work/venv-$kind/bin/python" -m pip install -q --disable-pip-version-check "$work"/dist/*."$kind"
    out=$(cd "$work" && "$work/venv-$kind/bin/minstf" demo 2>&1) || { echo "$out"; echo "check_install: minstf demo failed ($kind)"; exit 1; }
    echo "$out"
    case "$out" in
        *site-packages/minstf/shipped/stf-small-q2.safetensors*) ;;
        *) echo "check_install: the $kind install did not use its packaged weights"; exit 1 ;;
    esac
    echo "check_install: $kind installed in a fresh venv, minstf demo OK outside the checkout"
done
