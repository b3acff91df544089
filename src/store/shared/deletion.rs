//! Deleting canceled accounts' data ([`DeletionStore`](crate::store::DeletionStore)): the
//! same statements on both backends. The guard lives in the deleting `UPDATE` itself.

/// `impl DeletionStore for $store`.
macro_rules! deletion_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl DeletionStore for $store {
            async fn deletable_accounts(&self, as_of: NaiveDate) -> Result<Vec<AccountId>> {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM accounts a WHERE status = 'canceled' AND delete_after <= $1 \
                     AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = a.id AND s.status = 'active') \
                     ORDER BY id",
                )
                .bind(day(as_of))
                .fetch_all(&self.pool)
                .await?;
                rows::account_ids(&ids)
            }

            async fn delete_account(&self, request: &DeletionRequest<'_>) -> Result<Deletion> {
                let DeletionRequest { account, as_of, modules, actor, now } = *request;
                written(async {
                    let mut tx = self.write_tx().await?;
                    let id = account.as_str();
                    // The guard lives in the statement: only a canceled account past its date,
                    // with no active subscription, can be marked deleted.
                    let done = sqlx::query(
                        "UPDATE accounts SET status = 'deleted', deleted_at = $1, name = '', email = '' \
                         WHERE id = $2 AND status = 'canceled' AND delete_after <= $1 \
                         AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = accounts.id AND s.status = 'active')",
                    )
                    .bind(day(as_of))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::Rejected(format!(
                            "account {id} is not canceled and past its retention date; nothing was deleted"
                        ))
                        .into());
                    }
                    let mut deletion = Deletion {
                        account: id.to_string(),
                        ..Default::default()
                    };
                    deletion.licence_assignments = sqlx::query(
                        "UPDATE licences SET assigned_to = NULL, \
                         status = CASE WHEN status = 'assigned' THEN 'available' ELSE status END \
                         WHERE assigned_to IS NOT NULL AND subscription_id IN (SELECT id FROM subscriptions WHERE account_id = $1)",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    for (module, tables) in modules {
                        for t in tables {
                            let n = purge_table(&mut tx, t, id).await?;
                            deletion
                                .module_rows
                                .insert(format!("{module}:{}", t.table), n);
                        }
                    }
                    // Addresses of messages already sent are personal data too; unsent ones
                    // still go out.
                    sqlx::query(
                        "UPDATE outbox SET recipient = '' WHERE status = 'sent' \
                         AND document_id IN (SELECT id FROM documents WHERE account_id = $1)",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    audit_by(&mut tx, now, actor, "account_deleted", (id, None), &deletion).await?;
                    tx.commit().await?;
                    Ok(deletion)
                })
                .await
            }

            async fn deleted_accounts(&self) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM accounts WHERE status = 'deleted' ORDER BY deleted_at, id",
                )
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}
pub(crate) use deletion_store;
