#!/usr/bin/env bash
# The delivery acceptance of BENCHMARKS.md ("Delivery"): N invoices closed while the SMTP
# server is down (every message queued with a backoff), then `billrun send --retry-now` to a
# real SMTP server — postfix's smtp-sink, which accepts and discards — and to an .eml folder.
# Prints the send's wall time, messages per second and peak RSS.
#
#   scripts/bench-delivery.sh [N] [smtp_connections]      (defaults: 5000, 4)
#
# Needs a release build (cargo build --release, or BIN=path/to/billrun) and /usr/sbin/smtp-sink (apt-get install
# postfix; stop postfix's own daemon afterwards: postfix stop).
set -euo pipefail
N=${1:-5000}
CONNECTIONS=${2:-4}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/target/release/billrun}
WORK=$(mktemp -d)
trap 'kill ${SINK:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

python3 - "$N" > "$WORK/accounts.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps({
    "accounts": [{"id": f"a{i:06}", "name": f"Customer {i}", "email": f"billing@c{i}.example",
                  "currency": "USD"} for i in range(1, n + 1)],
    "subscriptions": [{"id": f"s{i:06}", "account": f"a{i:06}", "policy": "deferred",
                       "cycle": "monthly", "start": "2026-02-01", "items": [{"plan": "basic"}]}
                      for i in range(1, n + 1)],
}))
EOF

setup() { # $1: folder
    mkdir -p "$1"
    cat > "$1/billrun.toml" <<EOF
database_url = "sqlite://$1/billrun.db"
catalog = "$REPO/tests/fixtures/catalog.toml"
mail_dir = "$1/eml"
mail_from = "Billing <billing@billrun.test>"
finance_to = "finance@billrun.test"
smtp_connections = $CONNECTIONS
[seller]
legal_name = "Example Software Ltd"
address = ["1 Example Street", "London EC1A 1AA"]
country = "GB"
tax_id = "GB123456789"
EOF
    "$BIN" --config "$1/billrun.toml" import "$WORK/accounts.json" > /dev/null
    # The server is down: nothing listens on this port.
    BILLRUN_SMTP_URL="smtp://127.0.0.1:$(free_port)" \
        "$BIN" --config "$1/billrun.toml" close --as-of 2026-02-15 > "$1/close.txt" || true
    grep -q "failed (queued for retry)" "$1/close.txt"
}

timed_send() { # $1: folder, $2: label; then the environment
    local out
    out=$(/usr/bin/time -f "%e %M" "$BIN" --config "$1/billrun.toml" send --retry-now 2>&1 >"$1/send.txt")
    local secs kib sent
    secs=$(echo "$out" | tail -1 | cut -d' ' -f1)
    kib=$(echo "$out" | tail -1 | cut -d' ' -f2)
    sent=$(grep -o 'Sent [0-9]*' "$1/send.txt" | cut -d' ' -f2)
    python3 -c "print(f'$2: {$sent} messages in {$secs} s = {$sent/$secs:.0f}/s, peak RSS {$kib/1024:.1f} MiB')"
}

setup "$WORK/smtp"
PORT=$(free_port)
/usr/sbin/smtp-sink -u root 127.0.0.1:"$PORT" 2000 &
SINK=$!
sleep 0.5
BILLRUN_SMTP_URL="smtp://127.0.0.1:$PORT" timed_send "$WORK/smtp" "SMTP (smtp-sink, $CONNECTIONS connections)"
kill $SINK; SINK=

setup "$WORK/folder"
timed_send "$WORK/folder" ".eml folder"
test "$(ls "$WORK/folder/eml" | grep -c '\.eml$')" = "$((N + 1))"
