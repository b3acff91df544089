//! A close's chunks on PostgreSQL ([`CloseStore`]): a chunk read in one query per table by
//! `= ANY` of its ids, and written in a few `UNNEST` statements planned as index nested loops.

use super::*;

#[async_trait]
impl CloseStore for PgStore {
    async fn load_accounts(&self, ids: &[AccountId]) -> Result<Vec<AccountState>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = cols::ids(ids.iter().map(|i| i.as_str()));
        let fetch = |sql: &'static str| sqlx::query(sql).bind(&ids).fetch_all(&self.pool);
        let accounts = fetch(concat!(
            "SELECT ",
            shared::queries::account_cols!(),
            " FROM accounts WHERE id = ANY($1)"
        ))
        .await?
        .iter()
        .map(rows::AccountRow::read)
        .collect::<Result<_, _>>()?;
        let mut items = Vec::new();
        for r in fetch(
            "SELECT subscription_id, plan, quantity FROM subscription_items WHERE subscription_id IN \
             (SELECT id FROM subscriptions WHERE status = 'active' AND account_id = ANY($1)) \
             ORDER BY subscription_id, plan",
        )
        .await?
        {
            items.push((r.text("subscription_id")?, r.text("plan")?, r.int("quantity")?));
        }
        let mut pending = Vec::new();
        for r in fetch(
            "SELECT id, subscription_id, description, amount, discountable, kind FROM pending_items \
             WHERE document_id IS NULL AND subscription_id IN \
             (SELECT id FROM subscriptions WHERE status = 'active' AND account_id = ANY($1)) ORDER BY id",
        )
        .await?
        {
            let item = PendingItem {
                id: r.int("id")?,
                description: r.text("description")?,
                amount: r.money("amount")?,
                discountable: r.flag("discountable")?,
                kind: rows::pending_kind(&r.text("kind")?)?,
            };
            pending.push((r.text("subscription_id")?, item));
        }
        let mut queued = Vec::new();
        for r in fetch(
            "SELECT id, subscription_id, effective_at, kind, target FROM scheduled_changes \
             WHERE status = 'queued' AND subscription_id IN \
             (SELECT id FROM subscriptions WHERE status = 'active' AND account_id = ANY($1)) \
             ORDER BY effective_at, id",
        )
        .await?
        {
            let change = QueuedChange {
                id: r.int("id")?,
                effective_at: r.day("effective_at")?,
                kind: r.text("kind")?,
                target: rows::from_json("change target", &r.json_text("target")?)?,
            };
            queued.push((r.text("subscription_id")?, change));
        }
        let subscriptions = fetch(
            "SELECT id, account_id, policy, cycle, discount, start_date, anchor, period_start, \
             period_end, next_bill_date, periods_billed, status, cancel_at, last_change_at, version FROM subscriptions \
             WHERE status = 'active' AND account_id = ANY($1) ORDER BY id",
        )
        .await?
        .iter()
        .map(rows::SubscriptionRow::read)
        .collect::<Result<_, _>>()?;
        rows::assemble(accounts, subscriptions, items, pending, queued)
    }

    async fn commit_chunk(
        &self,
        ctx: &ChunkContext<'_>,
        closes: &[AccountClose],
    ) -> Result<Vec<StoredDocument>> {
        written(async {
            let mut tx = self.write_tx().await?;
            // Every join in a chunk's writes is a few hundred array rows against a big table
            // by its primary key. Planned with the arrays' real sizes, PostgreSQL picks a hash
            // join over a scan of the whole table — per chunk, so a close would grow with the
            // square of its size. Index nested loops are right for all of them; say so for
            // this transaction only.
            sqlx::query(
                "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)",
            )
            .execute(&mut *tx)
            .await?;
            // Subscriptions first, numbers next, accounts last: the lock order of every write.
            let updates: Vec<_> = closes.iter().flat_map(|c| &c.updates).collect();
            if !updates.is_empty() {
                advance_subscriptions(&mut tx, &updates).await?;
            }
            let issued = issue_chunk(&mut tx, ctx, closes, &updates).await?;

            let canceled = cancellations(closes, ctx.retention_days);
            if !canceled.is_empty() {
                sqlx::query(
                    "UPDATE accounts a SET status = 'canceled', canceled_at = u.canceled_at, delete_after = u.delete_after \
                     FROM UNNEST($1::text[], $2::date[], $3::date[]) AS u(id, canceled_at, delete_after) \
                     WHERE a.id = u.id AND a.status = 'active'",
                )
                .bind(canceled.iter().map(|c| c.0).collect::<Vec<_>>())
                .bind(canceled.iter().map(|c| c.1).collect::<Vec<_>>())
                .bind(canceled.iter().map(|c| c.2).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
                let refunds: Vec<_> = canceled.iter().filter(|c| !c.3.is_zero()).collect();
                if !refunds.is_empty() {
                    sqlx::query(
                        "INSERT INTO balance_ledger (account_id, at, amount, reason) \
                         SELECT u.account_id, u.at, u.amount, 'refund' \
                         FROM UNNEST($1::text[], $2::date[], $3::numeric[]) WITH ORDINALITY AS u(account_id, at, amount, ord) \
                         ORDER BY u.ord",
                    )
                    .bind(refunds.iter().map(|c| c.0).collect::<Vec<_>>())
                    .bind(refunds.iter().map(|c| c.1).collect::<Vec<_>>())
                    .bind(refunds.iter().map(|c| money(-c.3)).collect::<Vec<_>>())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            finish_chunk(&mut tx, ctx.run, closes, issued.len()).await?;
            tx.commit().await?;
            Ok(issued)
        })
        .await
    }

    /// The planner counts rows by the statistics autovacuum took before the close. Until it
    /// comes by again, the outbox it filled looks nearly empty, and delivery's statements
    /// (its claims and claim renewals, the documents read by id) combine the pending index
    /// with the primary key: every pending message read per batch. ANALYZE samples a fixed
    /// number of rows (a third of a second at 100,000 documents here).
    async fn refresh_statistics(&self) -> Result<()> {
        sqlx::query("ANALYZE documents, outbox")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Advance the chunk's subscriptions, each only from the version it was read at; the first
/// one another writer moved on is the conflict.
async fn advance_subscriptions(
    conn: &mut Conn,
    updates: &[&SubscriptionUpdate],
) -> Result<(), Fail> {
    let advanced: BTreeSet<String> = sqlx::query_scalar(
        "UPDATE subscriptions s SET cycle = u.cycle, anchor = u.anchor, period_start = u.period_start, \
         period_end = u.period_end, next_bill_date = u.next_bill_date, periods_billed = u.periods_billed, \
         status = u.status, ended_at = u.ended_at, version = s.version + 1 \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::date[], $5::date[], $6::date[], $7::date[], \
                     $8::bigint[], $9::text[], $10::date[]) \
         AS u(id, expected_version, cycle, anchor, period_start, period_end, next_bill_date, periods_billed, status, ended_at) \
         WHERE s.id = u.id AND s.version = u.expected_version AND s.status = 'active' \
         RETURNING s.id",
    )
    .bind(updates.iter().map(|u| u.id.as_str()).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.expected_version).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.cycle.as_str()).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.anchor).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.current_period.map(|p| p.start)).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.current_period.map(|p| p.end)).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.next_bill_date).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| i64::from(u.periods_billed)).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.status.as_str()).collect::<Vec<_>>())
    .bind(updates.iter().map(|u| u.ended_at).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    if advanced.len() != updates.len() {
        let missed = updates
            .iter()
            .find(|u| !advanced.contains(u.id.as_str()))
            .map_or_else(|| updates[0].id.to_string(), |u| u.id.to_string());
        return Err(StoreError::Conflict(format!("subscription {missed}")).into());
    }
    Ok(())
}
