#!/usr/bin/env bash
# Compile a model, compare it with a baseline report (the main branch's), append the Markdown
# diff to the CI job summary and fail when a budget is breached. examples/ci/mapc.yml calls it;
# it runs the same on a laptop.
#
#   BASELINE=main/report.json BUDGETS=budgets.toml mapc-check.sh MODEL OUT_DIR [mapc compile flags...]
#
# Environment:
#   BASELINE             the baseline compile report; missing or empty: no diff, and the budgets
#                        are checked on this compile alone (relative ones are skipped)
#   BUDGETS              the budgets file (default: budgets.toml beside this script)
#   MAPC                 the mapc command (default: mapc)
#   GITHUB_STEP_SUMMARY  where the Markdown goes (default: OUT_DIR/summary.md)
# Writes to OUT_DIR: model.mapc.onnx, report.json, report.html, diff.md, junit.xml.
# Exit status: 0 within budgets, 1 a budget breached, anything else an error of mapc's.
set -u -o pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: mapc-check.sh MODEL OUT_DIR [mapc compile flags...]" >&2
    exit 2
fi
model=$1
out=$2
shift 2
mapc=${MAPC:-mapc}
budgets=${BUDGETS:-$(dirname "$0")/budgets.toml}
baseline=${BASELINE:-}
summary=${GITHUB_STEP_SUMMARY:-$out/summary.md}
mkdir -p "$out"

# Without a baseline, compile checks the budgets itself; with one, diff checks them (relative ones too).
gate=()
if [ -z "$baseline" ] || [ ! -f "$baseline" ]; then
    gate=(--expect "$budgets" --junit "$out/junit.xml")
fi
status=0
"$mapc" compile "$model" -o "$out/model.mapc.onnx" --report "$out/report.json" --report "$out/report.html" "${gate[@]}" "$@" -q || status=$?
if [ "$status" -gt 1 ] || [ ! -f "$out/report.json" ]; then
    exit "$status"
fi

if [ "${#gate[@]}" -eq 0 ]; then
    "$mapc" diff "$baseline" "$out/report.json" --markdown --expect "$budgets" --junit "$out/junit.xml" > "$out/diff.md" || status=$?
    if [ "$status" -gt 1 ]; then
        exit "$status"
    fi
else
    printf '### mapc: %s\n\nNo baseline report (%s): budgets checked on this compile alone; see report.html.\n' \
        "$model" "${baseline:-none given}" > "$out/diff.md"
fi
cat "$out/diff.md" >> "$summary"
exit "$status"
