#!/usr/bin/env bash
# Mutation testing of the modules where a silent bug loses data or an alarm.
#
#   bash scripts/mutation.sh                  # every group below, one after the other
#   bash scripts/mutation.sh rules outbox     # only these groups
#   bash scripts/mutation.sh --list           # the groups and what they mutate
#   MUTMUT_MAX_CHILDREN=1 bash scripts/mutation.sh rules   # one test process (a shared machine)
#
# mutmut (configured in pyproject.toml, [tool.mutmut]) copies gateway/ into mutants/,
# changes one operator, constant or call at a time and runs the fast tests that reach
# the changed function. A mutant the tests do not notice "survived": either a test is
# missing, or the change makes no difference (an equivalent mutant, listed with its
# reason in docs/mutation-testing.md). Each group prints its score and its survivors.
#
# Long (minutes per group on a Raspberry-Pi-class or shared machine): never part of
# scripts/test.sh or CI. Results stay in mutants/ (git-ignored) between runs: `mutmut
# show NAME` prints a mutant's diff; a rerun checks only what changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="$PWD/.venv"

declare -A TARGETS=(
    [line-protocol]="gateway.upstream.line_protocol.*"
    [outbox]="gateway.outbox.*"
    [rules]="gateway.rules.*"
    [alarm-manager]="gateway.alarms.manager.*"
    [alarm-store]="gateway.alarms.store.*"
    [webhook]="gateway.alarms.webhook.*"
    [device-runner]="gateway.runtime.device_runner.*"
    [auth]="gateway.operations.http_api.x_bearer_token* gateway.console.sessions.* gateway.console.passwords.* gateway.console.throttle.*"
)
ORDER=(line-protocol outbox rules alarm-manager alarm-store webhook device-runner auth)

if [ "${1:-}" = "--list" ]; then
    for g in "${ORDER[@]}"; do printf '%-14s %s\n' "$g" "${TARGETS[$g]}"; done
    exit 0
fi

# The test environment (same as scripts/test.sh), then mutmut itself.
bash scripts/test.sh --version >/dev/null
if [ ! -x "$VENV/bin/mutmut" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,mutation]'
fi
mkdir -p mutants

groups=("$@")
[ "${#groups[@]}" -gt 0 ] || groups=("${ORDER[@]}")
for g in "${groups[@]}"; do
    [ -n "${TARGETS[$g]:-}" ] || { echo "unknown group '$g'; groups: ${ORDER[*]}" >&2; exit 2; }
done

rc=0
for g in "${groups[@]}"; do
    printf '==> %s: mutmut run %s\n' "$g" "${TARGETS[$g]}"
    # shellcheck disable=SC2086  # the patterns are meant to split into separate arguments
    "$VENV/bin/mutmut" run ${MUTMUT_MAX_CHILDREN:+--max-children "$MUTMUT_MAX_CHILDREN"} ${TARGETS[$g]} >"mutants/run-$g.log" 2>&1 \
        || { echo "mutmut failed; see mutants/run-$g.log" >&2; tail -20 "mutants/run-$g.log" >&2; exit 1; }
    # shellcheck disable=SC2086
    "$VENV/bin/python" scripts/mutation_score.py ${TARGETS[$g]} || rc=1
done
exit "$rc"
