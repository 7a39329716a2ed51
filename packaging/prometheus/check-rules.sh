#!/bin/sh
# The alerting rules, checked (make rules-check):
#   1. promtool check rules: the file loads, every expression parses;
#   2. promtool test rules: the unit tests pass;
#   3. the tests can fail: with any one alert taken out, and with any one alert's `for:` taken out, the
#      tests must fail (each alert has a case where it fires, each `for:` a case that tells it from none).
# Usage: packaging/prometheus/check-rules.sh     Exit status: 0 all passed, 1 something failed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
rules=passthrough-agent.rules.yml
tests=passthrough-agent.test.yml
tmp=$(mktemp -d /tmp/check-rules.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
failures=0

cd "$here"
promtool check rules "$rules" || failures=$((failures + 1))
promtool test rules "$tests" || failures=$((failures + 1))

# A mutant: the rules file with one change, next to an unchanged copy of the tests.
mutant() { # mutant DESCRIPTION AWK-PROGRAM ALERT
    description=$1 program=$2 alert=$3
    awk -v alert="$alert" "$program" "$rules" >"$tmp/$rules"
    cp "$tests" "$tmp/$tests"
    if cmp -s "$rules" "$tmp/$rules"; then return 1; fi
    # A mutant that does not load would fail the tests for the wrong reason.
    if ! (cd "$tmp" && promtool check rules "$rules") >"$tmp/out" 2>&1; then
        echo "FAIL  the mutant with $description does not load:"; sed 's/^/      /' "$tmp/out"
        failures=$((failures + 1)); return 0
    fi
    if (cd "$tmp" && promtool test rules "$tests") >"$tmp/out" 2>&1; then
        echo "FAIL  the tests still pass with $description"
        failures=$((failures + 1))
    else
        echo "ok    the tests fail with $description"
    fi
}
# An alert's block: its "- alert:" line up to the next rule's "- alert:" (or the comment above it).
without_alert='
    /^ *- alert: / { inside = ($3 == alert) }
    /^      #/ { inside = 0 }
    !inside'
without_for='
    /^ *- alert: / { inside = ($3 == alert) }
    /^      #/ { inside = 0 }
    !(inside && /^ *for: /)'
for alert in $(sed -n 's/^ *- alert: //p' "$rules"); do
    mutant "$alert taken out" "$without_alert" "$alert"
    mutant "the for: of $alert taken out" "$without_for" "$alert" || true
done

if [ "$failures" -eq 0 ]; then echo "check-rules: all passed"; exit 0; fi
echo "check-rules: $failures failed"
exit 1
