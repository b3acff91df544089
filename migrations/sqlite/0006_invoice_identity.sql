-- Invoices name both parties (SPEC §11).
-- * accounts.identity: address lines, country, tax ID and reverse charge as one JSON value
--   (NULL: none); the name stays its own column.
-- * documents.customer: the customer as the document names them, copied when it is issued
--   (JSON; NULL on documents issued before this migration, which name the account as it is).
-- * documents.corrects, documents.reason: the invoice a credit note corrects, and why
--   (SPEC §10; NULL for every other document).
-- * document_lines.detail: quantity and unit price of a charge, name and rate of a tax line
--   (JSON; NULL for a line that is one amount).
ALTER TABLE accounts ADD COLUMN identity TEXT;
ALTER TABLE documents ADD COLUMN customer TEXT;
ALTER TABLE documents ADD COLUMN corrects TEXT;
ALTER TABLE documents ADD COLUMN reason TEXT;
ALTER TABLE document_lines ADD COLUMN detail TEXT;
-- * pending_items.kind: a proration waiting for the next invoice (`pending`), or a one-off
--   charge (`one_off`, SPEC §10), which the invoice shows as such.
ALTER TABLE pending_items ADD COLUMN kind TEXT NOT NULL DEFAULT 'pending';
-- * outbox.hold: a customer email an operator holds (`operator`, `billrun hold RUN`) or that
--   will never go because its invoice was voided while it waited (`withdrawn`); NULL: it goes
--   when due. A run's review window is its messages' first `next_attempt_at` (SPEC §10).
ALTER TABLE outbox ADD COLUMN hold TEXT;
