//! Changes and licences on SQLite ([`ChangeStore`], shared): a change's pending items and a
//! purchase's licences are inserted one row each — a handful at most.

use super::*;
use crate::core::change::NewPending;

shared::changes::change_store!(SqliteStore);

/// The pending items a change queues for the subscription's next invoice.
async fn insert_pending(
    conn: &mut Conn,
    sub: &str,
    pending: &[NewPending],
    now: DateTime<Utc>,
) -> Result<(), Fail> {
    for p in pending {
        sqlx::query(
            "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(sub)
        .bind(&p.description)
        .bind(money(p.amount))
        .bind(p.discountable)
        .bind(ts(now))
        .bind(&p.key)
        .execute(&mut *conn)
        .await
        .map_err(conflict_as(format!("pending item {}", p.key)))?;
    }
    Ok(())
}

/// `count` new available licences of `plan`.
async fn add_licences(
    conn: &mut Conn,
    sub: &str,
    plan: &str,
    count: u32,
    now: DateTime<Utc>,
) -> Result<(), Fail> {
    for _ in 0..count {
        sqlx::query(
            "INSERT INTO licences (subscription_id, plan, status, created_at) VALUES ($1, $2, 'available', $3)",
        )
        .bind(sub)
        .bind(plan)
        .bind(ts(now))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
