//! Changes and licences on PostgreSQL ([`ChangeStore`], shared): a change's pending items go
//! in one `UNNEST` statement, a purchase's licences in one `generate_series`.

use super::*;
use crate::core::change::NewPending;

shared::changes::change_store!(PgStore);

/// The pending items a change queues for the subscription's next invoice.
async fn insert_pending(
    conn: &mut Conn,
    sub: &str,
    pending: &[NewPending],
    now: DateTime<Utc>,
) -> Result<(), Fail> {
    if pending.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) \
         SELECT $1, u.description, u.amount, u.discountable, $2, u.source_key \
         FROM UNNEST($3::text[], $4::numeric[], $5::boolean[], $6::text[]) WITH ORDINALITY \
         AS u(description, amount, discountable, source_key, ord) ORDER BY u.ord",
    )
    .bind(sub)
    .bind(now)
    .bind(pending.iter().map(|p| p.description.as_str()).collect::<Vec<_>>())
    .bind(pending.iter().map(|p| money(p.amount)).collect::<Vec<_>>())
    .bind(pending.iter().map(|p| p.discountable).collect::<Vec<_>>())
    .bind(pending.iter().map(|p| p.key.as_str()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
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
    sqlx::query(
        "INSERT INTO licences (subscription_id, plan, status, created_at) \
         SELECT $1, $2, 'available', $3 FROM generate_series(1, $4)",
    )
    .bind(sub)
    .bind(plan)
    .bind(now)
    .bind(i64::from(count))
    .execute(conn)
    .await?;
    Ok(())
}
