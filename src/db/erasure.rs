//! Erasure of a customer's personal data from the copies other tables keep (SPEC §12): the
//! outbound webhook events about it (and so their delivery logs), the Stripe outbox rows for
//! it, and stored idempotent responses. The customer and member rows themselves are
//! `db::customers::erase` and `db::members::erase`; the audit log is `db::audit`.

use sqlx::PgConnection;

use crate::domain::audit::PERSONAL_FIELDS;
use crate::domain::id::TenantId;

/// Scrubs the copies: in JSON about the customer its personal fields become `"[erased]"`,
/// and each of `emails` becomes `"[erased]"` wherever it is quoted; stored responses that
/// contain any of `personal` (emails and names) are dropped (they only served replays).
pub async fn scrub_copies(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    emails: &[String],
    personal: &[String],
) -> Result<(), sqlx::Error> {
    let fields: Vec<String> = PERSONAL_FIELDS.iter().map(|f| f.to_string()).collect();
    // Webhook events whose subject is the customer (its own events carry it as `id`, the
    // others as `customer`).
    sqlx::query!(
        "UPDATE webhook_events
         SET payload = tollgate_scrub_values(
                 jsonb_set(payload, '{data}', tollgate_erase_keys(payload -> 'data', $3)), $4)
         WHERE tenant_id = $1
           AND (payload -> 'data' ->> 'customer' = $2
                OR (type LIKE 'customer.%' AND payload -> 'data' ->> 'id' = $2))",
        tenant_id.as_str(),
        customer_id,
        &fields,
        emails
    )
    .execute(&mut *conn)
    .await?;
    // What a receiver answered may quote the payload back.
    sqlx::query!(
        "UPDATE webhook_deliveries d
         SET last_error = tollgate_scrub_text(d.last_error, $3)
         FROM webhook_events e
         WHERE d.tenant_id = $1 AND e.tenant_id = $1 AND e.event_id = d.event_id
           AND d.last_error IS NOT NULL
           AND (e.payload -> 'data' ->> 'customer' = $2
                OR (e.type LIKE 'customer.%' AND e.payload -> 'data' ->> 'id' = $2))",
        tenant_id.as_str(),
        customer_id,
        emails
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE stripe_outbox
         SET payload = tollgate_scrub_values(tollgate_erase_keys(payload, $3), $4),
             result = tollgate_scrub_values(tollgate_erase_keys(result, $3), $4),
             last_error = tollgate_scrub_text(last_error, $4)
         WHERE tenant_id = $1 AND resource_id = $2",
        tenant_id.as_str(),
        customer_id,
        &fields,
        emails
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM idempotency_keys
         WHERE tenant_id = $1 AND response_body IS NOT NULL
           AND EXISTS (SELECT 1 FROM unnest($2::text[]) AS v
                       WHERE v <> '' AND position(convert_to(v, 'UTF8') IN response_body) > 0)",
        tenant_id.as_str(),
        personal
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
