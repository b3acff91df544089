//! PostgreSQL's bulk writes of a chunk's documents and items, each one statement over
//! `UNNEST`ed arrays (one parameter per column whatever the row count), and the shared write
//! steps around them (`store/shared/writes.rs`).

use super::*;

shared::writes::write_helpers!();

/// Write numbered documents with their lines, ledger entries, consumed pending items and one
/// outbox message each; their ids, in order.
async fn write_documents(conn: &mut Conn, issue: &Issue<'_>) -> Result<Vec<i64>, Fail> {
    let docs = issue.docs;
    let m = |f: fn(&DraftDocument) -> Decimal| -> Vec<Money> {
        docs.iter().map(|d| money(f(d))).collect()
    };
    // Ids follow the order given, as one insert per document would: documents are listed
    // in id order and must come out in issue order.
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO documents (number, doc_key, kind, account_id, subscription_id, run_id, issued_at, due_at, \
         period_start, period_end, currency, subtotal, discount, tax, total, credit_applied, amount_due, created_at, \
         finance_batch_id, customer) \
         SELECT u.number, u.doc_key, u.kind, u.account_id, u.subscription_id, $1, u.issued_at, u.due_at, \
         u.period_start, u.period_end, u.currency, u.subtotal, u.discount, u.tax, u.total, u.credit_applied, \
         u.amount_due, $2, $19, u.customer \
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::date[], $9::date[], $10::date[], \
                     $11::date[], $12::text[], $13::numeric[], $14::numeric[], $15::numeric[], $16::numeric[], \
                     $17::numeric[], $18::numeric[], $20::text[]) WITH ORDINALITY \
         AS u(number, doc_key, kind, account_id, subscription_id, issued_at, due_at, period_start, period_end, \
              currency, subtotal, discount, tax, total, credit_applied, amount_due, customer, ord) \
         ORDER BY u.ord \
         RETURNING id, doc_key",
    )
    .bind(issue.run)
    .bind(issue.now)
    .bind(issue.numbers)
    .bind(docs.iter().map(|d| d.key.as_str()).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.account.as_str()).collect::<Vec<_>>())
    .bind(
        docs.iter()
            .map(|d| d.subscription.as_ref().map(|s| s.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(docs.iter().map(|d| d.issued_at).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.due_at).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.period.map(|p| p.start)).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.period.map(|p| p.end)).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.currency.code()).collect::<Vec<_>>())
    .bind(m(|d| d.subtotal))
    .bind(m(|d| d.discount))
    .bind(m(|d| d.tax))
    .bind(m(|d| d.total))
    .bind(m(|d| d.credit_applied))
    .bind(m(|d| d.amount_due))
    .bind(issue.batch)
    .bind(
        docs.iter()
            .map(|d| serde_json::to_string(&d.customer).unwrap_or_default())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let by_key: BTreeMap<String, i64> = rows.into_iter().map(|(id, key)| (key, id)).collect();
    let ids: Vec<i64> = docs
        .iter()
        .map(|d| {
            by_key
                .get(&d.key)
                .copied()
                .ok_or_else(|| StoreError::Conflict(format!("document {}", d.key)))
        })
        .collect::<Result<_, _>>()?;

    let lines = issue.lines(&ids);
    if !lines.is_empty() {
        sqlx::query(
            "INSERT INTO document_lines (document_id, position, kind, description, amount, detail) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::numeric[], $6::text[])",
        )
        .bind(lines.iter().map(|l| l.0).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.1).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.2.kind.as_str()).collect::<Vec<_>>())
        .bind(
            lines
                .iter()
                .map(|l| l.2.description.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(lines.iter().map(|l| money(l.2.amount)).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.2.detail_json()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    let ledger = issue.ledger(&ids);
    if !ledger.is_empty() {
        sqlx::query(
            "INSERT INTO balance_ledger (account_id, at, amount, reason, document_id) \
             SELECT u.account_id, u.at, u.amount, u.reason, u.document_id \
             FROM UNNEST($1::text[], $2::date[], $3::numeric[], $4::text[], $5::bigint[]) WITH ORDINALITY \
             AS u(account_id, at, amount, reason, document_id, ord) ORDER BY u.ord",
        )
        .bind(ledger.iter().map(|l| l.0.account.as_str()).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| l.0.issued_at).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| money(l.2)).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| l.3).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| l.1).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    let consumed = issue.consumed(&ids);
    if !consumed.is_empty() {
        let taken: Vec<i64> = sqlx::query_scalar(
            "UPDATE pending_items p SET document_id = u.document_id \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, document_id) \
             WHERE p.id = u.id AND p.document_id IS NULL RETURNING p.id",
        )
        .bind(consumed.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(consumed.iter().map(|c| c.1).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        if taken.len() != consumed.len() {
            // Name the first one not taken; a pending item listed twice is taken once.
            let mut left: Vec<i64> = taken;
            let missing = consumed
                .iter()
                .find(|(p, _)| match left.iter().position(|t| t == p) {
                    Some(i) => {
                        left.swap_remove(i);
                        false
                    }
                    None => true,
                })
                .map_or(0, |(p, _)| *p);
            return Err(StoreError::Conflict(format!("pending item {missing}")).into());
        }
    }

    sqlx::query(
        "INSERT INTO outbox (message_key, kind, document_id, recipient, subject, next_attempt_at, created_at) \
         SELECT u.number, 'document', u.document_id, a.email, u.subject, $6, $1 \
         FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY \
         AS u(number, document_id, subject, account_id, ord) \
         JOIN accounts a ON a.id = u.account_id ORDER BY u.ord",
    )
    .bind(issue.now)
    .bind(issue.numbers)
    .bind(&ids)
    .bind(
        docs.iter()
            .zip(issue.numbers)
            .map(|(d, n)| crate::core::messages::document_subject(d.kind, n))
            .collect::<Vec<_>>(),
    )
    .bind(docs.iter().map(|d| d.account.as_str()).collect::<Vec<_>>())
    .bind(issue.mail_at)
    .execute(&mut *conn)
    .await?;
    Ok(ids)
}

/// Items of subscriptions, in one statement.
pub(crate) async fn insert_items(conn: &mut Conn, items: &[(&str, &Item)]) -> Result<(), Fail> {
    if items.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO subscription_items (subscription_id, plan, quantity) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
    )
    .bind(items.iter().map(|(s, _)| *s).collect::<Vec<_>>())
    .bind(
        items
            .iter()
            .map(|(_, i)| i.plan.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|(_, i)| i64::from(i.quantity))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Balances moved from (account, before, after) where they still are `before`; the accounts
/// moved.
async fn move_balances(conn: &mut Conn, moves: &[&Move<'_>]) -> Result<BTreeSet<String>, Fail> {
    Ok(sqlx::query_scalar(
        "UPDATE accounts a SET balance = u.after \
         FROM UNNEST($1::text[], $2::numeric[], $3::numeric[]) AS u(id, before, after) \
         WHERE a.id = u.id AND a.balance = u.before RETURNING a.id",
    )
    .bind(moves.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| money(m.1)).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| money(m.2)).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}

/// Queued changes marked applied on (change, date); the changes marked.
async fn mark_applied(conn: &mut Conn, applied: &[Applied]) -> Result<BTreeSet<i64>, Fail> {
    Ok(sqlx::query_scalar(
        "UPDATE scheduled_changes c SET status = 'applied', applied_at = u.at \
         FROM UNNEST($1::bigint[], $2::date[]) AS u(id, at) \
         WHERE c.id = u.id AND c.status = 'queued' RETURNING c.id",
    )
    .bind(applied.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(applied.iter().map(|a| a.1).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect())
}
