-- The tables a period close fills in bulk, rebuilt for that (SQLite cannot drop a constraint,
-- so each is made anew, filled from the old one, and takes its name).
--
-- * No reference checks on lines, outbox messages and claims, as on PostgreSQL (its 0004 says
--   why they hold by construction; the test suite's books check looks for orphans). Each was
--   an index probe per row inside the writer's transaction; at a million documents a close
--   writes three million lines.
-- * document_lines is stored in its primary key (WITHOUT ROWID): lines are only ever read by
--   document, and a rowid table kept a second B-tree, the key, beside the rows.
-- * close_claims likewise: one B-tree keyed by account, not a table plus its key.
-- * outbox.finance_batch_id is unique among the rows that have one: a UNIQUE column indexed
--   the NULL of every document message.
-- The ids of the outbox carry on from where they were (sqlite_sequence is moved across), so
-- an id is never given twice.

CREATE TABLE document_lines_new (
    document_id     INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    description     TEXT NOT NULL,
    amount          TEXT NOT NULL,
    PRIMARY KEY (document_id, position)
) WITHOUT ROWID;
INSERT INTO document_lines_new (document_id, position, kind, description, amount)
    SELECT document_id, position, kind, description, amount FROM document_lines;
DROP TABLE document_lines;
ALTER TABLE document_lines_new RENAME TO document_lines;

CREATE TABLE close_claims_new (
    account_id      TEXT PRIMARY KEY,
    worker          TEXT NOT NULL,
    claimed_until   TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO close_claims_new (account_id, worker, claimed_until)
    SELECT account_id, worker, claimed_until FROM close_claims;
DROP TABLE close_claims;
ALTER TABLE close_claims_new RENAME TO close_claims;

CREATE TABLE outbox_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_key     TEXT NOT NULL UNIQUE,            -- document number, or finance-batch-N
    kind            TEXT NOT NULL CHECK (kind IN ('document','finance_batch')),
    document_id     INTEGER UNIQUE,
    finance_batch_id INTEGER,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','sent')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    claimed_by      TEXT,                            -- the worker sending it now
    claimed_until   TEXT,                            -- its lease; a crashed sender's claim expires
    sent_at         TEXT,
    created_at      TEXT NOT NULL
);
INSERT INTO outbox_new (id, message_key, kind, document_id, finance_batch_id, recipient, subject,
        status, attempts, next_attempt_at, last_error, claimed_by, claimed_until, sent_at, created_at)
    SELECT id, message_key, kind, document_id, finance_batch_id, recipient, subject,
        status, attempts, next_attempt_at, last_error, claimed_by, claimed_until, sent_at, created_at
    FROM outbox ORDER BY id;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_new');
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))
    WHERE name = 'outbox_new';
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE UNIQUE INDEX outbox_one_per_batch ON outbox (finance_batch_id) WHERE finance_batch_id IS NOT NULL;
CREATE INDEX outbox_pending ON outbox (status, next_attempt_at);
