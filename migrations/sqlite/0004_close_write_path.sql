-- The period close's write path at scale.

-- Every renewal moves a subscription's next_bill_date, so every index holding that column is
-- rewritten once per subscription per period. subscriptions_active_by_account (0003) answers
-- every query that looks for due subscriptions; subscriptions_due only cost writes.
-- (PostgreSQL's 0004 also drops the per-row foreign-key checks on the rows a close writes in
-- bulk; SQLite keeps them: there a reference check is an index probe inside the engine.)
DROP INDEX subscriptions_due;
