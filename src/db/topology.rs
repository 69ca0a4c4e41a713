//! Whether the database is one PostgreSQL or a Citus cluster (SPEC §14), asked once per pool.
//!
//! The statements are the same on both. What differs is how many tenants one statement may
//! serve: on one server a statement may read or write for any number of tenants (the check
//! batch, the usage group commit); on Citus each statement is for one tenant, so that it runs
//! on that tenant's node alone (a router query), and a batch of several tenants' work is run
//! as one statement per tenant.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

/// The options a process's connections use: on Citus, with every statement planned for the
/// values of its parameters (`plan_cache_mode = force_custom_plan`). Citus routes a statement
/// to one tenant's node as it plans it: a generic plan, made without the tenant's id, of a
/// statement whose tables are joined by their `tenant_id`s is planned for every node instead
/// (measured: `citus.multi_task_query_log_level` flagged such plans of sqlx's prepared
/// statements once PostgreSQL had switched them to generic). One connection is opened to ask.
pub async fn connect_options(options: PgConnectOptions) -> Result<PgConnectOptions, sqlx::Error> {
    let mut conn = PgConnection::connect_with(&options).await?;
    let citus = ask(&mut conn).await;
    conn.close().await.ok();
    Ok(if citus? {
        options.options([("plan_cache_mode", "force_custom_plan")])
    } else {
        options
    })
}

async fn ask(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS "citus!""#
    )
    .fetch_one(&mut *conn)
    .await
}

#[derive(Debug, Default)]
pub struct Topology {
    citus: OnceCell<bool>,
}

impl Topology {
    /// Whether the database has the `citus` extension (asked on `conn` the first time).
    pub async fn is_citus(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        self.citus.get_or_try_init(|| ask(conn)).await.copied()
    }
}

/// Whether `err` is one statement's refusal by the database, after which the session goes on:
/// an error (not a fatal one, which ends the session) the server reported. On Citus, a
/// statement of a tenant whose node is down is refused so (Citus reports the node's failure
/// as an error), and the tenants on other nodes are served on the same connection.
pub fn refused_alone(err: &sqlx::Error) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    err.as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
        .is_some_and(|e| matches!(e.severity(), PgSeverity::Error))
}

/// The positions of `items` grouped by tenant, each group in order, the groups in the order of
/// their first item.
pub fn by_tenant<'a, T>(items: &'a [T], tenant: impl Fn(&'a T) -> &'a str) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let t = tenant(item);
        match groups.iter_mut().find(|(g, _)| *g == t) {
            Some((_, members)) => members.push(i),
            None => groups.push((t, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

#[cfg(test)]
mod tests {
    use super::by_tenant;

    #[test]
    fn groups_keep_the_order_of_their_items_and_of_their_first_item() {
        let items = ["b", "a", "b", "c", "a", "b"];
        assert_eq!(
            by_tenant(&items, |t| t),
            vec![vec![0, 2, 5], vec![1, 4], vec![3]]
        );
        assert_eq!(by_tenant::<&str>(&[], |t| t), Vec::<Vec<usize>>::new());
    }
}
