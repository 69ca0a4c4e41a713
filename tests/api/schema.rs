//! The scale-out rule on the real migrated schema: every table carries `tenant_id`, and it
//! leads every primary key, unique index and foreign key, so the schema can be distributed
//! by tenant (docs/SCALING.md). The only exceptions are sqlx's `_sqlx_migrations` and
//! `tenants`, whose key is the tenant id itself.

use sqlx::PgPool;

use crate::helpers::spawn_app;

const EXEMPT: &[&str] = &["_sqlx_migrations", "tenants"];

/// Every breach of the rule, as "table: what".
async fn violations(db: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND c.relname::text <> ALL($1)
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                            AND a.attname = 'tenant_id' AND NOT a.attisdropped)
         ORDER BY 1",
    )
    .bind(EXEMPT)
    .fetch_all(db)
    .await
    .unwrap();
    out.extend(
        missing
            .into_iter()
            .map(|t| format!("{t}: no tenant_id column")),
    );

    // Primary keys and unique indexes (constraints or not) whose first column is not
    // tenant_id (an expression index has no first column: also a breach).
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
         WHERE n.nspname = 'public' AND (x.indisunique OR x.indisprimary)
           AND t.relname::text <> ALL($1)
           AND a.attname IS DISTINCT FROM 'tenant_id'
         ORDER BY 1, 2",
    )
    .bind(EXEMPT)
    .fetch_all(db)
    .await
    .unwrap();
    out.extend(
        indexes
            .into_iter()
            .map(|(t, i)| format!("{t}: unique index {i} not led by tenant_id")),
    );

    // Foreign keys: tenant_id leads both sides, so a reference stays on one shard.
    let fks: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, k.conname::text
         FROM pg_constraint k
         JOIN pg_class t ON t.oid = k.conrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
         JOIN pg_attribute r ON r.attrelid = k.confrelid AND r.attnum = k.confkey[1]
         WHERE n.nspname = 'public' AND k.contype = 'f'
           AND t.relname::text <> ALL($1)
           AND (a.attname <> 'tenant_id' OR r.attname <> 'tenant_id')
         ORDER BY 1, 2",
    )
    .bind(EXEMPT)
    .fetch_all(db)
    .await
    .unwrap();
    out.extend(
        fks.into_iter()
            .map(|(t, k)| format!("{t}: foreign key {k} not led by tenant_id")),
    );
    out
}

#[tokio::test]
async fn tenant_id_leads_every_key_index_and_foreign_key() {
    let app = spawn_app().await;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        tables > 10,
        "the migrated schema is there ({tables} tables)"
    );
    assert_eq!(violations(&app.db).await, Vec::<String>::new());

    // The check can fail: tables made to break each part of the rule are caught.
    for ddl in [
        "CREATE TABLE probe_no_tenant (id text PRIMARY KEY)",
        "CREATE TABLE probe_key (id text PRIMARY KEY, tenant_id text NOT NULL)",
        "CREATE TABLE probe_fk (tenant_id text NOT NULL, customer_id text NOT NULL,
             PRIMARY KEY (tenant_id, customer_id),
             FOREIGN KEY (customer_id, tenant_id) REFERENCES customers (customer_id, tenant_id))",
    ] {
        sqlx::query(ddl).execute(&app.db).await.unwrap();
    }
    let mut found = violations(&app.db).await;
    found.sort();
    assert_eq!(
        found,
        [
            "probe_fk: foreign key probe_fk_customer_id_tenant_id_fkey not led by tenant_id",
            "probe_key: unique index probe_key_pkey not led by tenant_id",
            "probe_no_tenant: no tenant_id column",
            "probe_no_tenant: unique index probe_no_tenant_pkey not led by tenant_id",
        ]
    );
}
