#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (see fuzz/Cargo.toml): first the saved reproducers of
# past crashes (fuzz/regressions/TARGET/*, each run once), then SECONDS of fuzzing from the
# seed corpus fuzz/corpus/TARGET/, one fuzzer at a time.
#
#   bash scripts/fuzz.sh [--ci] [SECONDS]     # SECONDS per target: 60, or 20 with --ci
#
# The committed corpus is only read: new inputs go to a temporary directory that is removed
# afterwards (grow the corpus by hand: fuzz/Cargo.toml says how). A crash leaves its input in
# fuzz/artifacts/TARGET/ (ignored by git) and fails the run; keep the minimised reproducer in
# fuzz/regressions/TARGET/.
#
# It needs nothing installed by hand: the fuzzers build with the machine's one toolchain (the
# sanitizer flags are unstable, so RUSTC_BOOTSTRAP=1 lets that stable compiler take them; a
# nightly is neither needed nor used), and cargo-fuzz, when `cargo fuzz` is not already there,
# is installed from crates.io into target/fuzz-tools (pinned, about 40 s once per clone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

per_target=60
for arg in "$@"; do
  case $arg in
    --ci) per_target=20 ;;
    '' | *[!0-9]*)
      echo "usage: bash scripts/fuzz.sh [--ci] [SECONDS]" >&2
      exit 2
      ;;
    *) per_target=$arg ;;
  esac
done
# libFuzzer reads -max_total_time=0 as "no limit".
if [ "$per_target" -lt 1 ]; then
  echo "fuzz: SECONDS must be at least 1" >&2
  exit 2
fi

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
  tools="$ROOT/target/fuzz-tools"
  if [ ! -x "$tools/bin/cargo-fuzz" ] ||
    ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into target/fuzz-tools"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$tools" --quiet
  fi
  export PATH="$tools/bin:$PATH"
fi
# The fuzz workspace only: lets the stable compiler take -Zsanitizer and friends.
export RUSTC_BOOTSTRAP=1

fuzz() { cargo fuzz "$1" --fuzz-dir "$ROOT/fuzz" "${@:2}"; }

# What went wrong, from a libFuzzer log: the panic (or sanitizer report) and the input.
explain() {
  grep -m1 -A6 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer: (timeout|out-of-memory))" "$1" || tail -n 30 "$1"
  grep -E "^Running: |Test unit written to|^Base64: " "$1" | tail -n 2 | sed 's/^/  /' || true
}

# fuzz/ is its own workspace and its Cargo.lock is not committed: start it from the main
# workspace's, so the fuzzers build the dependency versions the tests ran with.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

WORK=$(mktemp -d "${TMPDIR:-/tmp}/acr-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# libFuzzer with -jobs writes fuzz-N.log into the working directory: keep it out of the tree.
cd "$WORK"

start=$(date +%s)
echo "fuzz: building the targets ($(rustc --version | cut -d" " -f1-2), address sanitizer)"
fuzz build
mapfile -t targets < <(fuzz list)

failed=()
for t in "${targets[@]}"; do
  regressions=()
  if [ -d "$ROOT/fuzz/regressions/$t" ]; then
    mapfile -t regressions < <(find "$ROOT/fuzz/regressions/$t" -type f ! -name '.*' | sort)
  fi
  if [ ${#regressions[@]} -gt 0 ]; then
    if ! fuzz run "$t" "${regressions[@]}" -- -runs=0 >"$WORK/$t.replay.log" 2>&1; then
      echo "fuzz: $t: a saved reproducer in fuzz/regressions/$t/ fails again:"
      explain "$WORK/$t.replay.log"
      failed+=("$t (regression)")
      continue
    fi
    echo "fuzz: $t: ${#regressions[@]} saved reproducer(s) pass"
  fi

  mkdir -p "$WORK/new/$t"
  # http_entry drives a multi-threaded tokio runtime: objects that only the kernel's epoll set
  # or a task still running on another thread points to are freed after libFuzzer's leak check
  # of the input, which then reports them (an input it named replays clean, leak check at exit
  # included). Crashes, panics and the sanitizer's memory errors still fail it.
  leaks=()
  [ "$t" != http_entry ] || leaks=(-detect_leaks=0)
  if fuzz run "$t" "$WORK/new/$t" "$ROOT/fuzz/corpus/$t" -- \
    -max_total_time="$per_target" -jobs=1 -workers=1 "${leaks[@]}" >"$WORK/$t.log" 2>&1; then
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$WORK/$t.log" | tail -n 1 || true)
    echo "fuzz: $t: ${per_target}s ok: ${done_line:-no DONE line}"
  else
    echo "fuzz: $t: FAILED while fuzzing:"
    explain "$WORK/$t.log"
    echo "fuzz:   minimise: RUSTC_BOOTSTRAP=1 cargo fuzz tmin $t fuzz/artifacts/$t/<file>, then copy it to fuzz/regressions/$t/"
    failed+=("$t")
  fi
done

echo "fuzz: ${#targets[@]} targets in $(($(date +%s) - start))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
