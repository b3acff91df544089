//! Parked accounts ([`ParkingStore`](crate::store::ParkingStore)). Reading and releasing
//! parks is the same statements on both backends; how a chunk's parks and used-up releases
//! are written in bulk (`park`, `use_releases`) and how the previous period invoices are
//! looked up (`previous_invoices`) are each backend's.

use crate::core::domain::AccountId;
use crate::store::{ParkStatus, StoreError};

/// Accounts to park, with their reasons.
pub(crate) type Parks = [(AccountId, String)];

/// Why `unpark` refuses: `exists` whether the account exists, `status` its parked row's.
pub(crate) fn unpark_refusal(
    account: &str,
    exists: bool,
    status: Option<ParkStatus>,
) -> StoreError {
    StoreError::Rejected(match (exists, status) {
        (false, _) => format!("unknown account {account:?}; nothing was released"),
        (true, Some(ParkStatus::Released)) => format!(
            "account {account} is already released; the next close bills it without the sanity bounds"
        ),
        (true, _) => format!("account {account} is not parked; nothing was released"),
    })
}

/// `impl ParkingStore for $store`.
macro_rules! parking_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl ParkingStore for $store {
            async fn previous_invoice_totals(
                &self,
                subscriptions: &[&str],
            ) -> Result<BTreeMap<SubscriptionId, PreviousInvoice>> {
                if subscriptions.is_empty() {
                    return Ok(BTreeMap::new());
                }
                self.previous_invoices(subscriptions)
                    .await?
                    .iter()
                    .map(rows::previous_invoice_from_row)
                    .collect()
            }

            async fn park_status(
                &self,
                accounts: &[AccountId],
            ) -> Result<BTreeMap<AccountId, ParkedAccount>> {
                if accounts.is_empty() {
                    return Ok(BTreeMap::new());
                }
                let query = sqlx::query(concat!(
                    "SELECT account_id, reason, status, parked_at, run_id, released_at FROM parked_accounts \
                     WHERE account_id ",
                    in_list!(1)
                ));
                let query = query.bind(ids(accounts.iter().map(|a| a.as_str())));
                let parked = all(&self.pool, query, rows::parked_from_row).await?;
                Ok(parked.into_iter().map(|p| (p.account.clone(), p)).collect())
            }

            async fn park_accounts(
                &self,
                run: RunId,
                parked: &[(AccountId, String)],
                now: DateTime<Utc>,
            ) -> Result<()> {
                if parked.is_empty() {
                    return Ok(());
                }
                self.park(run, parked, now).await
            }

            async fn consume_releases(
                &self,
                accounts: &[AccountId],
                now: DateTime<Utc>,
            ) -> Result<()> {
                if accounts.is_empty() {
                    return Ok(());
                }
                self.use_releases(accounts, now).await
            }

            async fn parked(&self) -> Result<Vec<ParkedAccount>> {
                let query = sqlx::query(
                    "SELECT account_id, reason, status, parked_at, run_id, released_at FROM parked_accounts \
                     ORDER BY account_id",
                );
                all(&self.pool, query, rows::parked_from_row).await
            }

            async fn unpark(
                &self,
                account: &str,
                actor: &str,
                now: DateTime<Utc>,
            ) -> Result<ParkedAccount> {
                let mut tx = self.write_tx().await?;
                let row = sqlx::query(
                    "UPDATE parked_accounts SET status = 'released', released_at = $1 \
                     WHERE account_id = $2 AND status = 'parked' \
                     RETURNING account_id, reason, status, parked_at, run_id, released_at",
                )
                .bind(ts(now))
                .bind(account)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    let exists: bool =
                        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)")
                            .bind(account)
                            .fetch_one(&mut *tx)
                            .await?;
                    let status: Option<String> = sqlx::query_scalar(
                        "SELECT status FROM parked_accounts WHERE account_id = $1",
                    )
                    .bind(account)
                    .fetch_optional(&mut *tx)
                    .await?;
                    return Err(crate::store::shared::parking::unpark_refusal(
                        account,
                        exists,
                        status.as_deref().and_then(ParkStatus::parse),
                    ));
                };
                let parked = rows::parked_from_row(&row)?;
                let details = serde_json::json!({"reason": parked.reason, "run": parked.run});
                audit_by(&mut tx, now, actor, "account_unparked", (account, None), &details).await?;
                tx.commit().await?;
                Ok(parked)
            }

            async fn batch_parked(&self, batch: i64) -> Result<Vec<(String, String)>> {
                let query = sqlx::query(
                    "SELECT account_id, reason FROM parked_events WHERE finance_batch_id = $1 \
                     ORDER BY account_id, id",
                );
                all(&self.pool, query.bind(batch), |r| {
                    Ok((r.text("account_id")?, r.text("reason")?))
                })
                .await
            }
        }
    };
}
pub(crate) use parking_store;
