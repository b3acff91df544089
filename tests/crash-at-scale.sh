#!/usr/bin/env bash
# Crash testing at scale: tests/crash.rs at 30,000 subscriptions (about 1.5 documents each)
# with 3 SIGKILLs of `billrun close` at random moments, on SQLite and on PostgreSQL, built in
# release (the test harness runs the `billrun` binary of the same profile). Each kill point
# and the data come from one seed, printed with the result; replay a failure with
# BILLRUN_CRASH_SEED=<seed> bash tests/crash-at-scale.sh.
#
# Needs a PostgreSQL server at BILLRUN_TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres); it is mandatory here. Override the size with
# BILLRUN_CRASH_SUBSCRIPTIONS, BILLRUN_CRASH_KILLS and BILLRUN_CRASH_CHUNK.
set -euo pipefail
cd "$(dirname "$0")/.."

export BILLRUN_CRASH_SUBSCRIPTIONS="${BILLRUN_CRASH_SUBSCRIPTIONS:-30000}"
export BILLRUN_CRASH_KILLS="${BILLRUN_CRASH_KILLS:-3}"
export BILLRUN_CRASH_CHUNK="${BILLRUN_CRASH_CHUNK:-100}"
export BILLRUN_REQUIRE_POSTGRES=1

start=$(date +%s)
cargo test --release --test it crash:: -- --nocapture
echo "crash-at-scale: ${BILLRUN_CRASH_SUBSCRIPTIONS} subscriptions, ${BILLRUN_CRASH_KILLS} kills, both backends: passed in $(( $(date +%s) - start )) s"
