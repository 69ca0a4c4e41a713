//! All SQL: one module per table group, functions taking a connection or transaction and
//! returning `sqlx::Error`. Nothing here knows HTTP or the services above.

pub mod addons;
pub mod alerts;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod check_batch;
pub mod console_sessions;
pub mod coupons;
pub mod credit;
pub mod customers;
pub mod due;
pub mod erasure;
pub mod features;
pub mod gather;
pub mod hot_pool;
pub mod idempotency;
pub mod inspect;
pub mod invoice_items;
pub mod invoices;
pub mod leases;
pub mod members;
pub mod outbox;
pub mod pending_lines;
pub mod plans;
pub mod resolve;
pub mod retention;
pub mod schema;
pub mod secrets;
pub mod sessions;
pub mod stripe_events;
pub mod subscriptions;
pub mod tenants;
pub mod topology;
pub mod usage;
pub mod usage_batch;
pub mod webhooks;

/// Begins a transaction for statements that span tenants on purpose (the worker finding which
/// tenants have work due, and tidying), and says so: on Citus such a statement runs on every
/// node, and `citus.multi_task_query_log_level`, which flags (or refuses) every other
/// statement that does, is off for it (docs/SCALING.md). On one PostgreSQL the setting is a
/// placeholder nothing reads.
pub async fn spanning_tenants(
    db: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = db.begin().await?;
    span_tenants(&mut tx).await?;
    Ok(tx)
}

/// [`spanning_tenants`] for the rest of the transaction `tx` is in.
pub async fn span_tenants(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SET LOCAL citus.multi_task_query_log_level TO 'off'")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Up to `max` items claimed over `tenants`, in their order: each tenant's with
/// `claim(tenant, how many are left)`, a statement within that tenant (on Citus, on its
/// node). For the queues the worker serves: the tenants with work due come from a read that
/// locks nothing, the claims lock within one tenant each.
pub async fn claim_per_tenant<T, F, Fut>(
    tenants: Vec<crate::domain::id::TenantId>,
    max: i64,
    mut claim: F,
) -> Result<Vec<T>, sqlx::Error>
where
    F: FnMut(crate::domain::id::TenantId, i64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, sqlx::Error>>,
{
    let mut claimed = Vec::new();
    for tenant in tenants {
        let left = max - claimed.len() as i64;
        if left <= 0 {
            break;
        }
        claimed.extend(claim(tenant, left).await?);
    }
    Ok(claimed)
}

/// One round trip to the database (readiness).
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

/// Reads a stored text value into its type. A value that names nothing known is a decode
/// error naming the column and the value, never a guess.
pub fn decode<T>(
    column: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    parse(value).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(crate::domain::UnknownValue::new(column, value)),
    })
}

/// Connects a pool to `url`. On Citus its connections plan every statement for its
/// parameters ([`topology::connect_options`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<sqlx::PgPool, sqlx::Error> {
    let opts = topology::connect_options(url.parse()?).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        // No ping on every checkout: a broken connection fails its query and is replaced.
        .test_before_acquire(false)
        .connect_with(opts)
        .await?;
    Ok(pool)
}

/// Lets a domain type that is stored as text be read straight from its column (`query_as!`
/// with `col AS "col: Type"`): decoding a value that names nothing known is an error that
/// names the value, never a guess.
macro_rules! decode_text {
    ($t:ty, $what:literal, $parse:expr) => {
        impl sqlx::Type<sqlx::Postgres> for $t {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $t {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                let parse: fn(&str) -> Option<$t> = $parse;
                parse(text)
                    .ok_or_else(|| Box::new(crate::domain::UnknownValue::new($what, text)) as _)
            }
        }
    };
}

decode_text!(
    crate::domain::period::Interval,
    "interval",
    crate::domain::period::Interval::parse
);
decode_text!(
    crate::domain::status::SubscriptionStatus,
    "subscription status",
    |s| crate::domain::status::SubscriptionStatus::parse(s).ok()
);
decode_text!(
    crate::domain::status::InvoiceStatus,
    "invoice status",
    |s| crate::domain::status::InvoiceStatus::parse(s).ok()
);
decode_text!(crate::domain::status::MemberRole, "member role", |s| {
    crate::domain::status::MemberRole::parse(s).ok()
});
decode_text!(crate::domain::id::TenantId, "tenant id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});
decode_text!(crate::domain::id::ApiKeyId, "API key id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});
decode_text!(crate::domain::id::SubscriptionId, "subscription id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});
decode_text!(crate::domain::id::InvoiceId, "invoice id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});
decode_text!(crate::domain::id::InvoiceItemId, "invoice item id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});
decode_text!(crate::domain::id::LeaseId, "lease id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});
decode_text!(crate::domain::id::AuditId, "audit entry id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});
decode_text!(
    crate::domain::id::CustomerSessionId,
    "customer session id",
    |s| { crate::domain::id::PrefixedId::parse(s) }
);
decode_text!(crate::domain::id::EndpointId, "webhook endpoint id", |s| {
    crate::domain::id::PrefixedId::parse(s)
});

/// Makes the caller's (just begun) transaction one read-only snapshot of the whole database.
pub async fn snapshot(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await
        .map(drop)
}
