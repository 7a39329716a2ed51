#!/bin/sh
# Builds the libFuzzer harnesses and runs each for a while: `make fuzz`, `make fuzz-short`.
#
#   Tests/Fuzz/run.sh SECONDS TARGET...      TARGET: config uevent live-xml control guest
#
# One libFuzzer process at a time, one core. Each run starts from the seeds in Tests/Fuzz/TARGET
# (read only) and from what earlier runs found (.build-fuzz/corpus/TARGET, where new inputs go).
# A crash, a sanitizer report, a broken invariant or an input slower than FUZZ_TIMEOUT seconds leaves
# the input in .build-fuzz/artifacts/TARGET/ and fails the run; replay it with
#   .build-fuzz/release/passthrough-fuzz TARGET .build-fuzz/artifacts/TARGET/crash-…
# and make it a regression test in the normal suite.
set -eu

seconds=$1
shift
swift=${SWIFT:-swift}
timeout=${FUZZ_TIMEOUT:-10}
scratch=.build-fuzz
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."

start=$(date +%s)
PASSTHROUGH_FUZZ=1 "$swift" build -c release --scratch-path "$scratch" --product passthrough-fuzz \
    -Xswiftc -sanitize=fuzzer,address
echo "passthrough-fuzz built in $(( $(date +%s) - start )) s"

# Leak checking stays on, except for the known leaks of a dependency (see the file).
export LSAN_OPTIONS="suppressions=$here/lsan-suppressions.txt:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# Swift's own crash backtracer reads memory that AddressSanitizer then reports instead of the crash;
# libFuzzer's handler prints the stack and saves the input.
export SWIFT_BACKTRACE=enable=no

summary=""
failed=""
for target in "$@"; do
    corpus="$scratch/corpus/$target"
    artifacts="$scratch/artifacts/$target"
    log="$scratch/logs/$target.log"
    mkdir -p "$corpus" "$artifacts" "$scratch/logs"
    echo "== $target for $seconds s (log: $log)"
    status=0
    "$scratch/release/passthrough-fuzz" "$target" -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "Tests/Fuzz/$target" >"$log" 2>&1 || status=$?
    # The last status line, "#1234 DONE cov: 345 ft: 678 corp: 90/3Kb …", and -print_final_stats's lines.
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$log" | tail -n 1)
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(printf '%s\n' "$stats" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(printf '%s\n' "$stats" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(printf '%s\n' "$stats" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')
    rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\)/\1/p' "$log" | tail -n 1)
    if [ "$status" -eq 0 ]; then
        result=ok
    elif grep -q 'libFuzzer: run interrupted' "$log"; then
        result="INTERRUPTED (exit $status)"
        failed="$failed $target"
    else
        result="FAILED (exit $status)"
        failed="$failed $target"
        grep -E 'ERROR: |Fatal error|SUMMARY: |^==[0-9]+==|Test unit written' "$log" | head -n 20 || true
    fi
    line=$(printf '%-9s %12s runs %7s exec/s   cov %5s   ft %6s   corpus %-12s %s' \
        "$target" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")
    echo "$line"
    summary="$summary$line
"
done

echo
echo "== fuzzing, $seconds s per target (cov: edges covered; ft: coverage features)"
printf '%s' "$summary"
if [ -n "$failed" ]; then
    echo "fuzzing found problems in:$failed (inputs in $scratch/artifacts/)"
    exit 1
fi
