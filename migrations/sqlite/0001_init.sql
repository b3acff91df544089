-- billrun schema, SQLite flavour. Money is TEXT holding an exact decimal string (SQLite has
-- no exact decimal type; a NUMERIC column would round). Dates are TEXT 'YYYY-MM-DD',
-- timestamps TEXT RFC 3339 UTC. Idempotency is carried by the UNIQUE keys below.

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL,
    currency        TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    taxes           TEXT NOT NULL DEFAULT '[]',      -- JSON [{name, percent}]
    discount        TEXT,                            -- JSON, NULL when none
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','canceled','deleted')),
    balance         TEXT NOT NULL DEFAULT '0',       -- cache of SUM(balance_ledger.amount), updated in the same transaction
    canceled_at     TEXT,                            -- date the last subscription ended
    delete_after    TEXT,                            -- date from which its data may be deleted
    deleted_at      TEXT,
    finance_batch_id INTEGER REFERENCES finance_batches (id), -- the batch that reported the deletion
    created_at      TEXT NOT NULL
);
CREATE INDEX accounts_deletion ON accounts (status, delete_after);

CREATE TABLE subscriptions (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    policy          TEXT NOT NULL,
    cycle           TEXT NOT NULL,
    discount        TEXT,                            -- JSON, overrides the account's
    start_date      TEXT NOT NULL,
    anchor          TEXT NOT NULL,
    period_start    TEXT,                            -- the period last invoiced
    period_end      TEXT,
    next_bill_date  TEXT NOT NULL,                   -- due when <= as_of
    periods_billed  INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','ended')),
    cancel_at       TEXT,
    ended_at        TEXT,
    last_change_at  TEXT,
    version         INTEGER NOT NULL DEFAULT 0,  -- bumped by every write; writes are guarded by it
    created_at      TEXT NOT NULL
);
CREATE INDEX subscriptions_due ON subscriptions (status, next_bill_date, account_id);
CREATE INDEX subscriptions_account ON subscriptions (account_id);

CREATE TABLE subscription_items (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    plan            TEXT NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (subscription_id, plan)
);

-- One row per licence of a per-seat item. Removal is final.
CREATE TABLE licences (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    plan            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('available','assigned','removed')),
    assigned_to     TEXT,                            -- user email while assigned
    created_at      TEXT NOT NULL,
    removed_at      TEXT,
    CHECK ((status = 'assigned') = (assigned_to IS NOT NULL))
);
CREATE UNIQUE INDEX licences_one_per_user ON licences (subscription_id, assigned_to) WHERE assigned_to IS NOT NULL;

-- Changes queued for the end of a period, and the record of applied ones.
CREATE TABLE scheduled_changes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    kind            TEXT NOT NULL,                   -- cycle_longer, tier_downgrade, ...
    target          TEXT NOT NULL,                   -- JSON {plan, cycle, quantity}
    change_key      TEXT NOT NULL UNIQUE,            -- change/SUB/vVERSION
    requested_at    TEXT NOT NULL,
    effective_at    TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued','applied','withdrawn')),
    applied_at      TEXT
);
CREATE INDEX scheduled_changes_due ON scheduled_changes (status, effective_at);

-- Proration waiting for the next renewal or final invoice.
CREATE TABLE pending_items (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    description     TEXT NOT NULL,
    amount          TEXT NOT NULL,
    discountable    INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    source_key      TEXT NOT NULL UNIQUE,            -- the change that produced it
    document_id     INTEGER REFERENCES documents (id) -- set when an invoice consumed it
);
CREATE INDEX pending_items_open ON pending_items (subscription_id) WHERE document_id IS NULL;

-- Work claimed by a close worker: an account is closed by whoever holds its claim; a claim
-- whose lease ran out (a dead worker) can be taken again. Rows go when their chunk commits.
CREATE TABLE close_claims (
    account_id      TEXT PRIMARY KEY REFERENCES accounts (id),
    worker          TEXT NOT NULL,
    claimed_until   TEXT NOT NULL
);

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    as_of           TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    status          TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running','completed','failed')),
    documents       INTEGER NOT NULL DEFAULT 0,
    error           TEXT
);

-- Gapless numbering: one row per series and year, advanced inside the issuing transaction.
CREATE TABLE number_series (
    prefix          TEXT NOT NULL,
    year            INTEGER NOT NULL,
    last_number     INTEGER NOT NULL,
    PRIMARY KEY (prefix, year)
);

CREATE TABLE finance_batches (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL UNIQUE REFERENCES runs (id),
    created_at      TEXT NOT NULL
);

CREATE TABLE documents (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    number          TEXT NOT NULL UNIQUE,
    doc_key         TEXT NOT NULL UNIQUE,            -- e.g. renewal/SUB/2026-02-01: never issued twice
    kind            TEXT NOT NULL CHECK (kind IN ('invoice','credit_note')),
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    subscription_id TEXT REFERENCES subscriptions (id),
    run_id          INTEGER REFERENCES runs (id),
    finance_batch_id INTEGER REFERENCES finance_batches (id),
    issued_at       TEXT NOT NULL,
    due_at          TEXT NOT NULL,
    period_start    TEXT,
    period_end      TEXT,
    currency        TEXT NOT NULL,
    subtotal        TEXT NOT NULL,
    discount        TEXT NOT NULL,
    tax             TEXT NOT NULL,
    total           TEXT NOT NULL,
    credit_applied  TEXT NOT NULL,
    amount_due      TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX documents_account ON documents (account_id, issued_at);
CREATE INDEX documents_unbatched ON documents (finance_batch_id) WHERE finance_batch_id IS NULL;

CREATE TABLE document_lines (
    document_id     INTEGER NOT NULL REFERENCES documents (id),
    position        INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    description     TEXT NOT NULL,
    amount          TEXT NOT NULL,
    PRIMARY KEY (document_id, position)
);

-- The account balance as a ledger; accounts.balance is its running sum.
CREATE TABLE balance_ledger (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    at              TEXT NOT NULL,                   -- business date
    amount          TEXT NOT NULL,                   -- + credit granted, - credit used
    reason          TEXT NOT NULL CHECK (reason IN ('opening_credit','credit_note','credit_applied','refund')),
    document_id     INTEGER REFERENCES documents (id),
    finance_batch_id INTEGER REFERENCES finance_batches (id), -- refunds: the batch that reported them
    UNIQUE (document_id, reason)
);
-- A canceled account's remaining balance is refunded once.
CREATE UNIQUE INDEX balance_ledger_one_refund ON balance_ledger (account_id) WHERE reason = 'refund';
CREATE INDEX balance_ledger_account ON balance_ledger (account_id);

-- Messages to send, written in the transaction that issued what they carry.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_key     TEXT NOT NULL UNIQUE,            -- document number, or finance-batch-N
    kind            TEXT NOT NULL CHECK (kind IN ('document','finance_batch')),
    document_id     INTEGER UNIQUE REFERENCES documents (id),
    finance_batch_id INTEGER UNIQUE REFERENCES finance_batches (id),
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','sent')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
        last_error      TEXT,
    claimed_by      TEXT,                            -- the worker sending it now
    claimed_until   TEXT,                       -- its lease; a crashed sender's claim expires
    sent_at         TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX outbox_pending ON outbox (status, next_attempt_at);

CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,                   -- cli, daemon, simulator
    action          TEXT NOT NULL,
    account_id      TEXT,
    subscription_id TEXT,
    details         TEXT NOT NULL DEFAULT '{}'
);
