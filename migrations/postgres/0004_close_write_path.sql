-- The period close's write path at scale.

-- Per-row foreign-key triggers on the rows a close writes in bulk. PostgreSQL checks each
-- inserted row's references with a query of its own (and a row lock on the referenced row):
-- measured on a chunk of 5,000 documents, the four checks on `documents` made the insert 4.6
-- times slower, the one on `document_lines` 3.8 times — together about a third of a close.
-- These references hold by construction, inside the one transaction that writes them:
--   * documents → subscriptions, accounts: written in the transaction that advances the same
--     subscriptions under their version guard (a subscription that was not there, or had
--     moved on, fails the chunk); subscriptions → accounts keeps its foreign key;
--   * documents → runs, finance_batches: the run and its batch are made before its documents;
--   * document_lines, outbox → documents: ids returned by the documents' own insert;
--   * close_claims → accounts: claims are taken from the subscriptions of existing accounts.
-- No row these reference is ever deleted: deleting an account blanks its personal data and
-- keeps the row, its subscriptions and its documents (invoices are kept by law). The test
-- suite's books check looks for orphans after its story, crash and concurrency tests.
-- Everything written one row at a time (subscriptions, items, licences, changes, pending
-- items, the ledger, parked accounts) keeps its foreign keys. SQLite keeps all of its: there
-- a reference check is an index probe inside the engine, not a query per row.
ALTER TABLE documents
    DROP CONSTRAINT documents_account_id_fkey,
    DROP CONSTRAINT documents_subscription_id_fkey,
    DROP CONSTRAINT documents_run_id_fkey,
    DROP CONSTRAINT documents_finance_batch_id_fkey;
ALTER TABLE document_lines DROP CONSTRAINT document_lines_document_id_fkey;
ALTER TABLE outbox
    DROP CONSTRAINT outbox_document_id_fkey,
    DROP CONSTRAINT outbox_finance_batch_id_fkey;
ALTER TABLE close_claims DROP CONSTRAINT close_claims_account_id_fkey;

-- Every renewal moves a subscription's next_bill_date, so every index holding that column is
-- rewritten once per subscription per period. subscriptions_active_by_account (0003) answers
-- every query that looks for due subscriptions; subscriptions_due only cost writes.
DROP INDEX subscriptions_due;
