#!/usr/bin/env bash
# billrun's main job on the embedded default, from a fresh clone with no services:
# a new SQLite file under var/demo/, the bundled catalog and example accounts, a period close
# as of 2026-03-01 (catching up every period since January), emails written as .eml files.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=target/release/billrun
export BILLRUN_DATABASE_URL="sqlite://var/demo/billrun.db"
export BILLRUN_MAIL_DIR="var/demo/mail"
rm -rf var/demo
# billrun creates no folders for its database: a typo in a path must be an error.
mkdir -p var/demo

"$bin" migrate
"$bin" catalog check
"$bin" import config/example-data.json
echo
"$bin" close --as-of 2026-03-01
echo
"$bin" invoices
echo
echo "SQLite database: var/demo/billrun.db"
echo "Emails ($(ls var/demo/mail | wc -l) .eml files): var/demo/mail/"
