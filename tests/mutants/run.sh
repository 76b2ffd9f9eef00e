#!/usr/bin/env bash
# Mutation testing: each tests/mutants/NAME.patch plants one deliberate bug in core; this script
# builds the simulator with it and runs the scenarios named in the patch's header, which must catch
# it (a seed is killed when its outcome is not the scenario's `expect`, or when it panics).
#
#   tests/mutants/run.sh --list            one mutant name per line
#   tests/mutants/run.sh --check           every patch applies cleanly to the current tree (no build)
#   tests/mutants/run.sh [NAME...]         build and run each mutant (all by default); kill table
#   tests/mutants/run.sh --clean           remove the scratch worktree
#
# Each patch starts with a header read by this script (and by tests/tests/mutants.rs):
#   # mutant: NAME                  the file's name without .patch
#   # bug: what the mutant breaks
#   # kill: SCENARIO A..B           a scenario in scenarios/ and the seeds that must kill it
# A mutant is KILLED when at least one of its `kill:` rows kills >= 50% of its seeds (rows after
# the first killing one are not run, to keep CPU use low); otherwise it SURVIVED, and the script
# exits non-zero. A patch that no longer applies or no longer builds is an error (exit 2): core
# changed under it, so the mutant has to be re-derived.
#
# The caller's tree is never modified: the mutant is applied in a scratch git worktree (detached at
# HEAD plus the caller's uncommitted changes to tracked files), built into a separate target
# directory shared by all mutants (so each rebuild is incremental and the caller's own `sim`
# binary is never replaced by a mutated one). Scenarios are read from the caller's tree.
#
# Environment:
#   MUTANTS_SEEDS=A..B        run these seeds instead of each row's own range (for development)
#   MUTANTS_SEEDS_MAX=N       run at most the first N seeds of each row
#   MUTANTS_JOBS=N            `sim --jobs` (default 1: the machine is shared)
#   MUTANTS_ROW_TIMEOUT_S=S   time budget of one kill row (default 60 + 5 per seed); seeds that did not
#                             report by then count as killed (the mutant made the run hang)
#   MUTANTS_SCRATCH=DIR       scratch worktree (default ${TMPDIR:-/tmp}/ringkv-mutants/<repo>)
#   MUTANTS_TARGET_DIR=DIR    cargo target directory for mutated builds
#                             (default ${CARGO_TARGET_DIR:-<repo>/target}/mutants)
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
KILL_PERCENT_MIN=50

die() {
  echo "run.sh: $*" >&2
  exit 2
}

names() {
  local p
  for p in "$HERE"/*.patch; do
    [ -e "$p" ] || continue
    basename "$p" .patch
  done
}

# header FIELD FILE: every value of `# FIELD:` lines, one per line.
header() {
  sed -n "s/^# $1: *//p" "$2"
}

# A..B -> "A B" (exclusive end), or fails.
parse_range() {
  [[ "$1" =~ ^([0-9]+)\.\.([0-9]+)$ ]] || return 1
  [ "${BASH_REMATCH[1]}" -lt "${BASH_REMATCH[2]}" ] || return 1
  echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
}

# Static checks of one patch: header well formed, scenarios present, applies to the caller's tree.
check_one() {
  local name=$1 patch="$HERE/$1.patch" problems=0 row scenario seeds
  [ -f "$patch" ] || {
    echo "$name: no such mutant ($patch)"
    return 1
  }
  [ "$(header mutant "$patch")" = "$name" ] || {
    echo "$name: header '# mutant:' does not name $name"
    problems=1
  }
  [ -n "$(header bug "$patch")" ] || {
    echo "$name: no '# bug:' line"
    problems=1
  }
  [ -n "$(header kill "$patch")" ] || {
    echo "$name: no '# kill:' line"
    problems=1
  }
  while read -r scenario seeds; do
    [ -n "$scenario" ] || continue
    [ -f "$ROOT/scenarios/$scenario.toml" ] || {
      echo "$name: kill scenario scenarios/$scenario.toml does not exist"
      problems=1
    }
    parse_range "$seeds" >/dev/null || {
      echo "$name: kill row '$scenario $seeds' needs a seed range A..B"
      problems=1
    }
  done < <(header kill "$patch")
  if ! (cd "$ROOT" && git apply --check "$patch" 2>/tmp/mutants-apply.$$); then
    echo "$name: no longer applies to this tree (core changed under it; re-derive the mutant):"
    sed 's/^/    /' /tmp/mutants-apply.$$
    problems=1
  fi
  rm -f /tmp/mutants-apply.$$
  return $problems
}

# Brings the scratch worktree to the caller's HEAD plus uncommitted changes, then applies $1.
prepare_scratch() {
  local patch=$1 head
  head=$(git -C "$ROOT" rev-parse HEAD) || die "$ROOT is not a git checkout"
  if ! git -C "$SCRATCH" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$ROOT" worktree prune
    rm -rf "$SCRATCH"
    mkdir -p "$(dirname "$SCRATCH")"
    git -C "$ROOT" worktree add -q --detach "$SCRATCH" "$head" || die "cannot create $SCRATCH"
  fi
  git -C "$SCRATCH" checkout -q -f --detach "$head" || die "cannot reset $SCRATCH"
  git -C "$SCRATCH" clean -q -f -d
  local local_changes
  local_changes=$(git -C "$ROOT" diff HEAD --binary)
  if [ -n "$local_changes" ]; then
    printf '%s\n' "$local_changes" | git -C "$SCRATCH" apply --whitespace=nowarn ||
      die "cannot copy the caller's uncommitted changes into $SCRATCH"
  fi
  git -C "$SCRATCH" apply --whitespace=nowarn "$patch"
}

list=0
check=0
clean=0
selected=()
for arg in "$@"; do
  case "$arg" in
    --list) list=1 ;;
    --check) check=1 ;;
    --clean) clean=1 ;;
    -h | --help)
      sed -n '2,30p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    -*) die "unknown option $arg" ;;
    *) selected+=("$arg") ;;
  esac
done
[ ${#selected[@]} -gt 0 ] || mapfile -t selected < <(names)

if [ $list = 1 ]; then
  printf '%s\n' "${selected[@]}"
  exit 0
fi

if [ $check = 1 ]; then
  bad=0
  for name in "${selected[@]}"; do
    if check_one "$name"; then echo "ok   $name"; else bad=1; fi
  done
  exit $bad
fi

SCRATCH=${MUTANTS_SCRATCH:-${TMPDIR:-/tmp}/ringkv-mutants/$(basename "$ROOT")}
TARGET=${MUTANTS_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/mutants}
JOBS=${MUTANTS_JOBS:-1}

if [ $clean = 1 ]; then
  git -C "$ROOT" worktree remove --force "$SCRATCH" 2>/dev/null || rm -rf "$SCRATCH"
  git -C "$ROOT" worktree prune
  echo "removed $SCRATCH (the build cache $TARGET is kept)"
  exit 0
fi

# One run at a time per scratch worktree.
mkdir -p "$(dirname "$SCRATCH")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$SCRATCH.lock"
  flock -n 9 || die "another run.sh is using $SCRATCH (set MUTANTS_SCRATCH to run in parallel)"
fi

for name in "${selected[@]}"; do
  check_one "$name" >&2 || die "$name: fix the patch first (see above)"
done

LOGS=$(mktemp -d)
ROWS=()
DETAILS=()
survived=0
for name in "${selected[@]}"; do
  patch="$HERE/$name.patch"
  echo "== $name: $(header bug "$patch")" >&2
  prepare_scratch "$patch" || die "$name: the patch does not apply in $SCRATCH"
  echo "   building sim (log $LOGS/$name.build.log)" >&2
  if ! (cd "$SCRATCH" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p sim \
    --config profile.release.debug=false) >"$LOGS/$name.build.log" 2>&1; then
    tail -20 "$LOGS/$name.build.log" >&2
    die "$name: the mutated tree does not build (core changed under the mutant; re-derive it)"
  fi
  verdict=SURVIVED
  while read -r scenario seeds; do
    [ -n "$scenario" ] || continue
    [ -n "${MUTANTS_SEEDS:-}" ] && seeds=$MUTANTS_SEEDS
    read -r from to < <(parse_range "$seeds") || die "bad seed range $seeds"
    if [ -n "${MUTANTS_SEEDS_MAX:-}" ] && [ $((to - from)) -gt "$MUTANTS_SEEDS_MAX" ]; then
      to=$((from + MUTANTS_SEEDS_MAX))
      seeds="$from..$to"
    fi
    total=$((to - from))
    if [ $verdict = KILLED ]; then
      ROWS+=("$(printf '%-36s %-22s %-9s %7s %7s  %s' "$name" "$scenario" "$seeds" - - "not run")")
      continue
    fi
    out="$LOGS/$name.$scenario.jsonl"
    echo "   $scenario seeds $seeds" >&2
    # A mutant can also make a run hang (e.g. a membership change that never completes): the
    # row gets a time budget, and seeds that never reported count as killed (liveness failure).
    ROW_TIMEOUT_S=${MUTANTS_ROW_TIMEOUT_S:-$((60 + 5 * total))}
    timeout "$ROW_TIMEOUT_S" "$TARGET/release/sim" "$ROOT/scenarios/$scenario.toml" \
      --seeds "$seeds" --jobs "$JOBS" --json </dev/null >"$out" 2>"$LOGS/$name.$scenario.stderr"
    status=$?
    reported=$(grep -c '"seed"' "$out")
    note=""
    if [ $status = 124 ]; then
      note=" (timed out after ${ROW_TIMEOUT_S}s: $((total - reported)) seeds never reported)"
      echo "  $note" >&2
    fi
    passed=$(grep -c '"as_expected": *true' "$out")
    killed=$((total - passed))
    percent=$((killed * 100 / total))
    row=SURVIVED
    if [ $((killed * 100)) -ge $((total * KILL_PERCENT_MIN)) ]; then
      row=KILLED
      verdict=KILLED
    fi
    ROWS+=("$(printf '%-36s %-22s %-9s %7s %6s%%  %s' "$name" "$scenario" "$seeds" "$killed" "$percent" "$row$note")")
    # The killing seeds are this mutant's regression seeds, re-derived on every run.
    examples=$(grep -v '"as_expected": *true' "$out" | sed -n 's/.*"seed": *\([0-9]*\).*/\1/p' | head -8 | tr '\n' ' ')
    [ "$reported" -lt "$total" ] && examples="$examples+ $((total - reported)) that never reported "
    DETAILS+=("$name on $scenario: killing seeds ${examples:-none }(replay: tests/mutants/run.sh $name, or sim scenarios/$scenario.toml --seed N on the mutated build)")
  done < <(header kill "$patch")
  [ $verdict = KILLED ] || survived=$((survived + 1))
done

echo
printf '%-36s %-22s %-9s %7s %7s  %s\n' mutant scenario seeds killed "kill %" verdict
for row in "${ROWS[@]}"; do echo "$row"; done
echo
for line in "${DETAILS[@]}"; do echo "$line"; done
echo
echo "${#selected[@]} mutants, $((${#selected[@]} - survived)) killed, $survived survived (logs in $LOGS)"
[ $survived = 0 ]
