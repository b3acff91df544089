-- Parked accounts: a close that fails a sanity bound (src/core/sanity.rs) issues nothing for
-- the account and parks it here, with the reason, until an operator releases it
-- (`billrun unpark`). A released account is closed once without the plausibility bounds;
-- its row goes when that close commits.
CREATE TABLE parked_accounts (
    account_id      TEXT PRIMARY KEY REFERENCES accounts (id),
    reason          TEXT NOT NULL,
    parked_at       TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs (id),   -- the run that parked it
    status          TEXT NOT NULL DEFAULT 'parked' CHECK (status IN ('parked','released')),
    released_at     TEXT,
    CHECK ((status = 'released') = (released_at IS NOT NULL))
);

-- Every parking, kept for finance: each is reported by one finance batch, like refunds and
-- deletions (a run that crashed before its batch is reported by the next one).
CREATE TABLE parked_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    run_id          INTEGER NOT NULL REFERENCES runs (id),
    reason          TEXT NOT NULL,
    parked_at       TEXT NOT NULL,
    finance_batch_id INTEGER REFERENCES finance_batches (id),
    UNIQUE (run_id, account_id)
);
CREATE INDEX parked_events_batch ON parked_events (finance_batch_id);

-- The previous period invoice of a subscription (the sanity check's reference): the latest
-- such invoice is one index lookup per subscription.
CREATE INDEX documents_subscription_invoices ON documents (subscription_id, id)
    WHERE kind = 'invoice' AND period_start IS NOT NULL;
