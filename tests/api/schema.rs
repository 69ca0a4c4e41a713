//! The scale-out rule on the real migrated schema: every table carries `tenant_id`, and it
//! leads every primary key, unique index and foreign key, so the schema can be distributed
//! by tenant (docs/SCALING.md). The only exceptions are sqlx's `_sqlx_migrations` and
//! `tenants`, whose key is the tenant id itself. On Citus (SPEC §14), also: every table but
//! `_sqlx_migrations` is distributed by `tenant_id`, co-located with `tenants`, and every
//! function that acts for one tenant (its first argument `p_tenant` or `p_tenant_scope`, and
//! not immutable) is distributed on that argument.

use sqlx::{Acquire, PgConnection};

use crate::helpers::{on_citus, spawn_app};

const EXEMPT: &[&str] = &["_sqlx_migrations", "tenants"];

/// Every breach of the rule, as "table: what".
async fn violations(db: &mut PgConnection) -> Vec<String> {
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
    .fetch_all(&mut *db)
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
    .fetch_all(&mut *db)
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
    .fetch_all(&mut *db)
    .await
    .unwrap();
    out.extend(
        fks.into_iter()
            .map(|(t, k)| format!("{t}: foreign key {k} not led by tenant_id")),
    );
    if on_citus() {
        out.extend(distribution_violations(db).await);
    }
    out
}

/// On Citus, every breach of the distribution rule, as "table: what" or "function: what".
async fn distribution_violations(db: &mut PgConnection) -> Vec<String> {
    let tables: Vec<(String, Option<String>, bool)> = sqlx::query_as(
        "SELECT c.relname::text,
                CASE WHEN p.logicalrelid IS NOT NULL AND p.partmethod = 'h'
                     THEN column_to_column_name(p.logicalrelid, p.partkey) END,
                p.colocationid IS NOT DISTINCT FROM
                    (SELECT colocationid FROM pg_dist_partition
                     WHERE logicalrelid = 'tenants'::regclass)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND c.relname <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap();
    let mut out = Vec::new();
    for (table, column, colocated) in tables {
        match column.as_deref() {
            None => out.push(format!("{table}: not distributed")),
            Some("tenant_id") if colocated => {}
            Some("tenant_id") => out.push(format!("{table}: not co-located with tenants")),
            Some(other) => out.push(format!("{table}: distributed by {other}")),
        }
    }
    let functions: Vec<String> = sqlx::query_scalar(
        "SELECT f.proname::text
         FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
         LEFT JOIN pg_dist_object o
                ON o.classid = 'pg_proc'::regclass AND o.objid = f.oid
         WHERE n.nspname = 'public' AND f.proargnames[1] IN ('p_tenant', 'p_tenant_scope')
           AND f.proargtypes[0] = 'text'::regtype
           -- An immutable function reads no table (a key built from a tenant's id).
           AND f.provolatile <> 'i'
           AND (o.distribution_argument_index IS DISTINCT FROM 0
                OR o.colocationid IS DISTINCT FROM
                   (SELECT colocationid FROM pg_dist_partition
                    WHERE logicalrelid = 'tenants'::regclass))
         ORDER BY 1",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap();
    out.extend(
        functions
            .into_iter()
            .map(|f| format!("{f}: not distributed on its tenant argument")),
    );
    out
}

#[tokio::test]
async fn tenant_id_leads_every_key_index_and_foreign_key() {
    let app = spawn_app().await;
    let mut conn = app.db.acquire().await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(
        tables > 10,
        "the migrated schema is there ({tables} tables)"
    );
    assert_eq!(violations(&mut conn).await, Vec::<String>::new());

    // The check can fail: tables made to break each part of the rule are caught (in a
    // transaction rolled back after).
    let mut tx = conn.begin().await.unwrap();
    for ddl in [
        "CREATE TABLE probe_no_tenant (id text PRIMARY KEY)",
        "CREATE TABLE probe_key (id text PRIMARY KEY, tenant_id text NOT NULL)",
        "CREATE TABLE probe_parent (tenant_id text NOT NULL, customer_id text NOT NULL,
             PRIMARY KEY (tenant_id, customer_id))",
        "CREATE TABLE probe_fk (tenant_id text NOT NULL, customer_id text NOT NULL,
             PRIMARY KEY (tenant_id, customer_id),
             FOREIGN KEY (customer_id, tenant_id)
                 REFERENCES probe_parent (customer_id, tenant_id))",
    ] {
        sqlx::query(ddl).execute(&mut *tx).await.unwrap();
    }
    let mut expected = vec![
        "probe_fk: foreign key probe_fk_customer_id_tenant_id_fkey not led by tenant_id",
        "probe_key: unique index probe_key_pkey not led by tenant_id",
        "probe_no_tenant: no tenant_id column",
        "probe_no_tenant: unique index probe_no_tenant_pkey not led by tenant_id",
    ];
    if on_citus() {
        // A table left local, one distributed by another column, one in another
        // co-location group, and a function for one tenant left undistributed. (Sequential:
        // Citus creates a function over the connection that created the shards.)
        for ddl in [
            "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'",
            "CREATE TABLE probe_by_id (tenant_id text NOT NULL, id text NOT NULL,
                 PRIMARY KEY (tenant_id, id))",
            "SELECT create_distributed_table('probe_by_id', 'id', colocate_with => 'none')",
            "CREATE TABLE probe_alone (tenant_id text NOT NULL, id text NOT NULL,
                 PRIMARY KEY (tenant_id, id))",
            "SELECT create_distributed_table('probe_alone', 'tenant_id', colocate_with => 'none')",
            "CREATE FUNCTION probe_for_tenant(p_tenant text) RETURNS bigint
                 LANGUAGE sql AS 'SELECT count(*) FROM customers WHERE tenant_id = p_tenant'",
        ] {
            sqlx::query(ddl).execute(&mut *tx).await.unwrap();
        }
        expected.extend([
            "probe_alone: not co-located with tenants",
            "probe_by_id: distributed by id",
            "probe_fk: not distributed",
            "probe_for_tenant: not distributed on its tenant argument",
            "probe_key: not distributed",
            "probe_no_tenant: not distributed",
            "probe_parent: not distributed",
        ]);
    }
    let mut found = violations(&mut tx).await;
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    tx.rollback().await.unwrap();
}

/// On Citus, Tollgate's own connections (the default `sslmode`, prefer) are encrypted,
/// though each node serves the self-signed certificate Citus made for it.
#[tokio::test]
async fn connections_to_a_citus_node_use_its_self_signed_certificate() {
    if !on_citus() {
        return;
    }
    let app = spawn_app().await;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(ssl, "the connection is not encrypted");
}
