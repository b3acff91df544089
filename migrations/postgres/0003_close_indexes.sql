-- Indexes the period close walks at scale.

-- Claims walk due subscriptions in account order from where the last claim ended; this index
-- gives that order with the due date beside it, so a claim reads the next stretch of the
-- index and stops, instead of sorting every due subscription again for each chunk.
CREATE INDEX subscriptions_active_by_account ON subscriptions (account_id, next_bill_date) WHERE status = 'active';

-- A chunk loads the queued changes of its subscriptions.
CREATE INDEX scheduled_changes_queued ON scheduled_changes (subscription_id) WHERE status = 'queued';

-- A run's documents carry its finance batch from the moment they are issued (the batch row
-- is made when the run begins), so the batch is never assembled by rewriting a million
-- document rows at the end. Documents are looked up by batch (the batch email, adopting
-- documents a dead run left behind) and by "no batch yet" (documents issued outside a run).
DROP INDEX documents_unbatched;
CREATE INDEX documents_batch ON documents (finance_batch_id);
