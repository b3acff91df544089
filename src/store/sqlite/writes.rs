//! SQLite's bulk writes of a chunk's documents and items, each one statement that takes a
//! JSONB array of rows apart (`jsonb.rs`), and the shared write steps around them
//! (`store/shared/writes.rs`).

use super::*;

shared::writes::write_helpers!();

/// Write numbered documents with their lines, ledger entries, consumed pending items and one
/// outbox message each; their ids, in order.
async fn write_documents(conn: &mut Conn, issue: &Issue<'_>) -> Result<Vec<i64>, Fail> {
    let docs = issue.docs;
    let created = ts(issue.now);
    let mut rows = JsonRows::new();
    for (doc, number) in docs.iter().zip(issue.numbers) {
        rows.row()
            .cell(number)
            .cell(&doc.key)
            .cell(doc.kind.as_str())
            .cell(doc.account.as_str())
            .cell(doc.subscription.as_ref().map(|s| s.as_str()))
            .cell(doc.issued_at)
            .cell(doc.due_at)
            .cell(doc.period.map(|p| p.start))
            .cell(doc.period.map(|p| p.end))
            .cell(doc.currency.code())
            .cell(doc.subtotal)
            .cell(doc.discount)
            .cell(doc.tax)
            .cell(doc.total)
            .cell(doc.credit_applied)
            .cell(doc.amount_due)
            .cell(json(&doc.customer));
    }
    // The ids are given here rather than read back with RETURNING (a result row per
    // document): the next ones after the largest ever given, as AUTOINCREMENT would (this
    // transaction holds the write lock), in the order of `docs` — so documents listed in id
    // order come out in issue order.
    let first: i64 = sqlx::query_scalar(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'documents'), 0), \
         COALESCE((SELECT MAX(id) FROM documents), 0)) + 1",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO documents (id, number, doc_key, kind, account_id, subscription_id, run_id, issued_at, due_at, \
         period_start, period_end, currency, subtotal, discount, tax, total, credit_applied, amount_due, created_at, \
         finance_batch_id, customer) \
         SELECT $2 + key, value->>0, value->>1, value->>2, value->>3, value->>4, $3, value->>5, value->>6, value->>7, \
         value->>8, value->>9, value->>10, value->>11, value->>12, value->>13, value->>14, value->>15, $4, $5, \
         value->>16 \
         FROM jsonb_each($1) ORDER BY rowid",
    )
    .bind(rows.finish())
    .bind(first)
    .bind(issue.run)
    .bind(&created)
    .bind(issue.batch)
    .execute(&mut *conn)
    .await
    .map_err(conflict_as(format!(
        "a document among {} (key already issued)",
        docs[0].key
    )))?;
    let ids: Vec<i64> = (first..).take(docs.len()).collect();

    let mut lines = JsonRows::new();
    for (id, pos, line) in issue.lines(&ids) {
        lines
            .row()
            .cell(id)
            .cell(pos)
            .cell(line.kind.as_str())
            .cell(&line.description)
            .cell(line.amount)
            .cell(line.detail_json());
    }
    write_rows(
        conn,
        "INSERT INTO document_lines (document_id, position, kind, description, amount, detail) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM jsonb_each($1) ORDER BY rowid",
        lines,
    )
    .await?;

    let mut ledger = JsonRows::new();
    for (doc, id, amount, reason) in issue.ledger(&ids) {
        ledger
            .row()
            .cell(doc.account.as_str())
            .cell(doc.issued_at)
            .cell(amount)
            .cell(reason)
            .cell(id);
    }
    write_rows(
        conn,
        "INSERT INTO balance_ledger (account_id, at, amount, reason, document_id) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM jsonb_each($1) ORDER BY rowid",
        ledger,
    )
    .await?;

    let consumed = issue.consumed(&ids);
    if !consumed.is_empty() {
        let mut rows = JsonRows::new();
        for (pending, doc) in &consumed {
            rows.row().cell(*pending).cell(*doc);
        }
        let taken: std::collections::BTreeSet<i64> = sqlx::query_scalar(
            "UPDATE pending_items SET document_id = u.value->>1 FROM jsonb_each($1) AS u \
             WHERE pending_items.id = u.value->>0 AND pending_items.document_id IS NULL \
             RETURNING pending_items.id",
        )
        .bind(rows.finish())
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        if let Some((missing, _)) = consumed.iter().find(|(p, _)| !taken.contains(p)) {
            return Err(StoreError::Conflict(format!("pending item {missing}")).into());
        }
        if taken.len() != consumed.len() {
            return Err(StoreError::Conflict("a pending item consumed twice".into()).into());
        }
    }

    let mut messages = JsonRows::new();
    for ((doc, id), number) in docs.iter().zip(&ids).zip(issue.numbers) {
        messages
            .row()
            .cell(number)
            .cell(*id)
            .cell(crate::core::messages::document_subject(doc.kind, number))
            .cell(doc.account.as_str());
    }
    let done = sqlx::query(
        "INSERT INTO outbox (message_key, kind, document_id, recipient, subject, next_attempt_at, created_at) \
         SELECT u.value->>0, 'document', u.value->>1, a.email, u.value->>2, $3, $2 \
         FROM jsonb_each($1) AS u JOIN accounts a ON a.id = u.value->>3 ORDER BY u.rowid",
    )
    .bind(messages.finish())
    .bind(&created)
    .bind(ts(issue.mail_at))
    .execute(&mut *conn)
    .await
    .map_err(conflict_as("an outbox message of this chunk"))?;
    if done.rows_affected() != docs.len() as u64 {
        return Err(
            StoreError::Corrupt("a document names an account that does not exist".into()).into(),
        );
    }
    Ok(ids)
}

/// Items of subscriptions, in one statement.
pub(crate) async fn insert_items(conn: &mut Conn, items: &[(&str, &Item)]) -> Result<(), Fail> {
    let mut rows = JsonRows::new();
    for (sub, item) in items {
        rows.row()
            .cell(*sub)
            .cell(item.plan.as_str())
            .cell(i64::from(item.quantity));
    }
    write_rows(
        conn,
        "INSERT INTO subscription_items (subscription_id, plan, quantity) \
         SELECT value->>0, value->>1, value->>2 FROM jsonb_each($1) ORDER BY rowid",
        rows,
    )
    .await?;
    Ok(())
}

/// Balances moved from (account, before, after) where they still are `before`; the accounts
/// moved.
async fn move_balances(conn: &mut Conn, moves: &[&Move<'_>]) -> Result<BTreeSet<String>, Fail> {
    let mut rows = JsonRows::new();
    for (account, before, after) in moves.iter().copied() {
        rows.row().cell(*account).cell(*before).cell(*after);
    }
    Ok(sqlx::query_scalar(
        "UPDATE accounts SET balance = u.value->>2 FROM jsonb_each($1) AS u \
         WHERE accounts.id = u.value->>0 AND accounts.balance = u.value->>1 RETURNING accounts.id",
    )
    .bind(rows.finish())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}

/// Queued changes marked applied on (change, date); the changes marked.
async fn mark_applied(conn: &mut Conn, applied: &[Applied]) -> Result<BTreeSet<i64>, Fail> {
    let mut rows = JsonRows::new();
    for (id, at) in applied {
        rows.row().cell(*id).cell(*at);
    }
    // `+status`: look the changes up by id (scheduled_changes_due leads with status), not
    // walk an index on status.
    Ok(sqlx::query_scalar(
        "UPDATE scheduled_changes SET status = 'applied', applied_at = u.value->>1 FROM jsonb_each($1) AS u \
         WHERE scheduled_changes.id = u.value->>0 AND +scheduled_changes.status = 'queued' \
         RETURNING scheduled_changes.id",
    )
    .bind(rows.finish())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}
