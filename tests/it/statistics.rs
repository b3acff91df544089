//! After a close that issues many documents, PostgreSQL's planner statistics count what it
//! wrote, so the delivery right after it is planned on the tables as they are (a claim that
//! believes the outbox empty reads every pending message per batch).

use crate::common::{Sandbox, count, import_monthly};

#[tokio::test]
async fn a_large_close_leaves_the_planner_counting_its_documents_and_outbox_postgres() {
    let Some(backend) = crate::common::postgres() else {
        return;
    };
    // Customer emails held for review: the close writes the outbox and sends none of it.
    let sb = Sandbox::with_config_extra(backend, "review_hours = 24\n");
    sb.ok(&["migrate"]);
    import_monthly(&sb, "a", 600);
    // Statistics as a production database has them before its close: taken while the
    // outbox and the documents were empty.
    sb.db.exec("ANALYZE").await;
    let before = count(
        &sb.db,
        "SELECT reltuples::bigint FROM pg_class WHERE relname = 'outbox'",
    )
    .await;
    assert!(before <= 0, "the outbox was analyzed non-empty: {before}");

    // 600 accounts due for January and February: 1,200 invoices.
    sb.ok(&["close", "--as-of", "2026-02-15"]);
    let documents = count(&sb.db, "SELECT COUNT(*) FROM documents").await;
    assert!(documents >= 1_000, "{documents} documents");
    for (table, sql) in [
        (
            "documents",
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'documents'",
        ),
        (
            "outbox",
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'outbox'",
        ),
    ] {
        let counted = count(&sb.db, sql).await;
        assert!(
            counted >= documents,
            "the planner counts {counted} rows in {table}, the close wrote {documents}"
        );
    }
}
