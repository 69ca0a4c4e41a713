//! Whether the database is one PostgreSQL or a Citus cluster (SPEC §14), asked once per pool.
//!
//! The statements are the same on both. What differs is how many tenants one statement may
//! serve: on one server a statement may read or write for any number of tenants (the check
//! batch, the usage group commit); on Citus each statement is for one tenant, so that it runs
//! on that tenant's node alone (a router query), and a batch of several tenants' work is run
//! as one statement per tenant.

use sqlx::PgConnection;
use tokio::sync::OnceCell;

#[derive(Debug, Default)]
pub struct Topology {
    citus: OnceCell<bool>,
}

impl Topology {
    /// Whether the database has the `citus` extension (asked on `conn` the first time).
    pub async fn is_citus(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        self.citus
            .get_or_try_init(|| async {
                sqlx::query_scalar!(
                    r#"SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS "citus!""#
                )
                .fetch_one(&mut *conn)
                .await
            })
            .await
            .copied()
    }
}

/// The positions of `items` grouped by tenant, each group in order, the groups in the order of
/// their first item.
pub fn by_tenant<'a, T>(items: &'a [T], tenant: impl Fn(&T) -> &'a str) -> Vec<Vec<usize>> {
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
