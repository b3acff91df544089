//! Plan changes, cancellations and licences ([`ChangeStore`](crate::store::ChangeStore)):
//! the same statements on both backends. Every write is guarded by the subscription's
//! version and runs in one transaction; the documents it issues go through the backend's
//! bulk `write_documents` like a close's.

use crate::core::change::ChangeOutcome;
use crate::core::document::DraftDocument;
use crate::core::licence::LicenceOutcome;
use rust_decimal::Decimal;

/// What a change or a licence operation issues outside a close run: documents, and the
/// account balance they were computed from and leave.
pub(crate) trait Issues {
    fn documents(&self) -> &[DraftDocument];
    /// (before, after).
    fn balance(&self) -> (Decimal, Decimal);
}

impl Issues for ChangeOutcome {
    fn documents(&self) -> &[DraftDocument] {
        &self.documents
    }
    fn balance(&self) -> (Decimal, Decimal) {
        (self.balance_before, self.balance_after)
    }
}

impl Issues for LicenceOutcome {
    fn documents(&self) -> &[DraftDocument] {
        &self.documents
    }
    fn balance(&self) -> (Decimal, Decimal) {
        (self.balance_before, self.balance_after)
    }
}

/// `impl ChangeStore for $store`.
macro_rules! change_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl ChangeStore for $store {
            async fn apply_change(
                &self,
                outcome: &ChangeOutcome,
                ctx: &ChangeContext<'_>,
                modules: &ModuleMap,
            ) -> Result<Vec<StoredDocument>> {
                let (account, now) = (ctx.account.as_str(), ctx.now);
                written(async {
                    let mut tx = self.write_tx().await?;
                    let sub = outcome.subscription.as_str();
                    let key = format!("change/{sub}/v{}", outcome.expected_version);
                    let c = outcome.changed.as_ref();
                    let update = sqlx::query(
                        "UPDATE subscriptions SET period_start = COALESCE($1, period_start), period_end = COALESCE($2, period_end), \
                         next_bill_date = COALESCE($3, next_bill_date), anchor = COALESCE($4, anchor), cycle = COALESCE($5, cycle), \
                         periods_billed = COALESCE($6, periods_billed), last_change_at = $7, version = version + 1 \
                         WHERE id = $8 AND version = $9 AND status = 'active'",
                    )
                    .bind(c.map(|c| day(c.current_period.start)))
                    .bind(c.map(|c| day(c.current_period.end)))
                    .bind(c.map(|c| day(c.next_bill_date)))
                    .bind(c.map(|c| day(c.anchor)))
                    .bind(c.map(|c| c.cycle.as_str()))
                    .bind(c.map(|c| i64::from(c.periods_billed)))
                    .bind(day(outcome.at));
                    update_subscription(&mut tx, update, sub, outcome.expected_version).await?;
                    if let Some(c) = c {
                        replace_items(&mut tx, &[(sub, c.items.as_slice())]).await?;
                    }
                    // A new request supersedes whatever was waiting for the period end.
                    sqlx::query(
                        "UPDATE scheduled_changes SET status = 'withdrawn' WHERE subscription_id = $1 AND status = 'queued'",
                    )
                    .bind(sub)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO scheduled_changes (subscription_id, kind, target, change_key, requested_at, effective_at, \
                         status, applied_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(sub)
                    .bind(outcome.kind.as_str())
                    .bind(json(&outcome.target))
                    .bind(&key)
                    .bind(day(outcome.at))
                    .bind(day(outcome.queued_for.unwrap_or(outcome.at)))
                    .bind(if outcome.queued_for.is_some() {
                        "queued"
                    } else {
                        "applied"
                    })
                    .bind(outcome.queued_for.is_none().then(|| day(outcome.at)))
                    .execute(&mut *tx)
                    .await
                    .map_err(conflict_as(format!("change {key}")))?;
                    insert_pending(&mut tx, sub, &outcome.pending, now).await?;
                    let issued = issue_out_of_run(&mut tx, ctx, outcome).await?;
                    if !outcome.purge_modules.is_empty() {
                        let mut purged = BTreeMap::new();
                        for module in &outcome.purge_modules {
                            for t in modules.get(module).map(Vec::as_slice).unwrap_or_default() {
                                let n = purge_table(&mut tx, t, account).await?;
                                purged.insert(format!("{module}:{}", t.table), n);
                            }
                        }
                        let details = serde_json::json!({"modules": outcome.purge_modules, "rows": purged});
                        audit(&mut tx, now, "module_data_purged", (account, Some(sub)), &details)
                            .await?;
                    }
                    let details = serde_json::json!({
                        "kind": outcome.kind.as_str(), "at": outcome.at.to_string(), "target": outcome.target,
                        "documents": issued.iter().map(|d| d.document.number.clone()).collect::<Vec<_>>()
                    });
                    audit(&mut tx, now, "change", (account, Some(sub)), &details).await?;
                    tx.commit().await?;
                    Ok(issued)
                })
                .await
            }

            async fn subscription_account(&self, subscription: &str) -> Result<Option<AccountId>> {
                let id: Option<String> =
                    sqlx::query_scalar("SELECT account_id FROM subscriptions WHERE id = $1")
                        .bind(subscription)
                        .fetch_optional(&self.pool)
                        .await?;
                id.map(|a| account_id(&a)).transpose()
            }

            async fn set_cancel(
                &self,
                outcome: &CancelOutcome,
                account: &AccountId,
                actor: &str,
                now: DateTime<Utc>,
            ) -> Result<()> {
                written(async {
                    let mut tx = self.write_tx().await?;
                    let sub = outcome.subscription.as_str();
                    let update = sqlx::query(
                        "UPDATE subscriptions SET cancel_at = $1, version = version + 1 \
                         WHERE id = $2 AND version = $3 AND status = 'active'",
                    )
                    .bind(outcome.cancel_at.map(day));
                    update_subscription(&mut tx, update, sub, outcome.expected_version).await?;
                    let action = match outcome.cancel_at {
                        Some(_) => "cancel",
                        None => "cancel_undone",
                    };
                    let details = serde_json::json!({
                        "at": outcome.at.to_string(), "ends": outcome.cancel_at.map(|d| d.to_string())
                    });
                    audit_by(&mut tx, now, actor, action, (account.as_str(), Some(sub)), &details).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn licences(&self, subscription: &str) -> Result<Vec<Licence>> {
                let query = sqlx::query(
                    "SELECT id, plan, status, assigned_to FROM licences WHERE subscription_id = $1 ORDER BY id",
                );
                all(&self.pool, query.bind(subscription), rows::licence_from_row).await
            }

            async fn apply_licence_op(
                &self,
                outcome: &LicenceOutcome,
                ctx: &ChangeContext<'_>,
            ) -> Result<Vec<StoredDocument>> {
                let now = ctx.now;
                written(async {
                    let mut tx = self.write_tx().await?;
                    let sub = outcome.subscription.as_str();
                    let dated = !outcome.documents.is_empty() || outcome.items.is_some();
                    let update = sqlx::query(
                        "UPDATE subscriptions SET last_change_at = CASE WHEN $1 THEN $2 ELSE last_change_at END, \
                         version = version + 1 WHERE id = $3 AND version = $4 AND status = 'active'",
                    )
                    .bind(dated)
                    .bind(day(outcome.at));
                    update_subscription(&mut tx, update, sub, outcome.expected_version).await?;
                    if let Some(items) = &outcome.items {
                        replace_items(&mut tx, &[(sub, items)]).await?;
                    }
                    // In order: an operation may unassign a licence and assign it again.
                    for m in &outcome.mutations {
                        let (sql, id, text): (&'static str, i64, Option<&str>) = match m {
                            LicenceMutation::Add { plan, count } => {
                                add_licences(&mut tx, sub, plan, *count, now).await?;
                                continue;
                            }
                            LicenceMutation::Assign { id, user } => (
                                "UPDATE licences SET status = 'assigned', assigned_to = $1 WHERE id = $2 AND status = 'available'",
                                *id,
                                Some(user.as_str()),
                            ),
                            LicenceMutation::Unassign { id } => (
                                "UPDATE licences SET status = 'available', assigned_to = NULL WHERE id = $1 AND status = 'assigned'",
                                *id,
                                None,
                            ),
                            LicenceMutation::Remove { id } => {
                                let done = sqlx::query(
                                    "UPDATE licences SET status = 'removed', removed_at = $1 WHERE id = $2 AND status = 'available'",
                                )
                                .bind(ts(now))
                                .bind(id)
                                .execute(&mut *tx)
                                .await?;
                                guarded(done.rows_affected(), || format!("licence {id}"))?;
                                continue;
                            }
                            LicenceMutation::Replan { id, plan } => (
                                "UPDATE licences SET plan = $1 WHERE id = $2 AND status = 'assigned'",
                                *id,
                                Some(plan.as_str()),
                            ),
                        };
                        let mut q = sqlx::query(sql);
                        if let Some(t) = text {
                            q = q.bind(t);
                        }
                        let done = q.bind(id).execute(&mut *tx).await?;
                        guarded(done.rows_affected(), || format!("licence {id}"))?;
                    }
                    let issued = issue_out_of_run(&mut tx, ctx, outcome).await?;
                    let subject = (ctx.account.as_str(), Some(sub));
                    audit(&mut tx, now, "licence", subject, &outcome.op).await?;
                    tx.commit().await?;
                    Ok(issued)
                })
                .await
            }

            async fn licence_counts(&self, subscription: &str) -> Result<(u32, u32)> {
                let (assigned, available): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*) FILTER (WHERE status = 'assigned'), \
                     COUNT(*) FILTER (WHERE status = 'available') \
                     FROM licences WHERE subscription_id = $1",
                )
                .bind(subscription)
                .fetch_one(&self.pool)
                .await?;
                Ok((assigned as u32, available as u32))
            }

            async fn issue_requested(
                &self,
                doc: &DraftDocument,
                effect: Requested,
                ctx: &RequestContext<'_>,
            ) -> Result<StoredDocument> {
                let now = ctx.now;
                written(async {
                    let mut tx = self.write_tx().await?;
                    let account = doc.account.as_str();
                    let issued = issue_one(&mut tx, ctx.numbering, doc, now).await?;
                    let (action, details) = match effect {
                        Requested::Charge { before, after } => {
                            update_balances(&mut tx, &[(account, before, after)]).await?;
                            let details = serde_json::json!({
                                "invoice": issued.document.number, "amount": doc.subtotal.to_string(),
                                "description": doc.lines.first().map(|l| l.description.as_str()),
                            });
                            ("charge", details)
                        }
                        Requested::Correction => {
                            let refund = credit_or_refund(&mut tx, doc, issued.id, now).await?;
                            let details = serde_json::json!({
                                "credit_note": issued.document.number, "corrects": doc.corrects,
                                "reason": doc.reason, "total": doc.total.to_string(), "refund": refund,
                            });
                            let void = doc.key.starts_with("void/");
                            (if void { "void" } else { "credit" }, details)
                        }
                    };
                    let subject = (account, doc.subscription.as_ref().map(|s| s.as_str()));
                    audit_by(&mut tx, now, ctx.actor, action, subject, &details).await?;
                    tx.commit().await.map(|()| issued).map_err(Into::into)
                })
                .await
            }

            async fn add_charge(
                &self,
                account: &AccountId,
                subscription: &str,
                description: &str,
                amount: rust_decimal::Decimal,
                key: &str,
                actor: &str,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let details = serde_json::json!({
                    "description": description, "amount": amount.to_string(), "on": "next invoice",
                });
                written(async {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, \
                         source_key, kind) VALUES ($1, $2, $3, $4, $5, $6, 'one_off')",
                    )
                    .bind(subscription)
                    .bind(description)
                    .bind(money(amount))
                    .bind(false)
                    .bind(ts(now))
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(conflict_as(format!("charge {key}")))?;
                    let subject = (account.as_str(), Some(subscription));
                    audit_by(&mut tx, now, actor, "charge", subject, &details).await?;
                    Ok(tx.commit().await?)
                })
                .await
            }

            async fn changes(&self) -> Result<Vec<ChangeRecord>> {
                let query = sqlx::query(
                    "SELECT subscription_id, kind, target, requested_at, effective_at, status \
                     FROM scheduled_changes ORDER BY id",
                );
                all(&self.pool, query, rows::change_from_row).await
            }
        }
    };
}
pub(crate) use change_store;
