//! The schema ([`SchemaStore`](crate::store::SchemaStore)): migrations run by the backend's
//! own `MIGRATOR` (its errors told by its `migrate_error`), and the configured module tables
//! checked by its `COLUMN_EXISTS` query, which counts a (table, column) pair; the schema's
//! version read where `MIGRATIONS_TABLE_EXISTS` finds sqlx's table of migrations.

/// `impl SchemaStore for $store`.
macro_rules! schema_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl SchemaStore for $store {
            async fn migrate(&self) -> Result<()> {
                MIGRATOR.run(&self.pool).await.map_err(migrate_error)
            }

            async fn schema_version(&self) -> Result<SchemaVersion> {
                let expected = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
                let tracked: i64 = sqlx::query_scalar(MIGRATIONS_TABLE_EXISTS)
                    .fetch_one(&self.pool)
                    .await?;
                let applied: Option<i64> = if tracked == 0 {
                    None
                } else {
                    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                        .fetch_one(&self.pool)
                        .await?
                };
                Ok(SchemaVersion { applied, expected })
            }

            async fn check_module_tables(&self, modules: &ModuleMap) -> Result<()> {
                for (module, tables) in modules {
                    for t in tables {
                        let n: i64 = sqlx::query_scalar(COLUMN_EXISTS)
                            .bind(&t.table)
                            .bind(&t.account_column)
                            .fetch_one(&self.pool)
                            .await?;
                        if n != 1 {
                            return Err(StoreError::Rejected(format!(
                                "modules.{module}: table {:?} with column {:?} does not exist",
                                t.table, t.account_column
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    };
}
pub(crate) use schema_store;
