//! Customer sessions (SPEC §9): `POST /v1/customer_sessions` and `DELETE …/{id}` for the
//! tenant, and the `/v1/me` routes a session acts on — for its one customer, with the same
//! services, rules and error codes as the tenant API.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::MeCaller;
use super::error::ApiResult;
use super::extract::{IdPath, Json, List, OptionalJson, PageParams, Query};
use crate::audit::Origin;
use crate::billing::invoicing;
use crate::billing::subscribing::{self as subs, ChangeSubscription};
use crate::billing::views::{Invoice, Subscription, UpcomingInvoice};
use crate::customers::export::{self, Export};
use crate::customers::members::{self, Member};
use crate::customers::{self, Customer};
use crate::domain::period::Interval;
use crate::domain::qty::Qty;
use crate::entitlements::check::{CheckInput, CheckResult, EntitlementList};
use crate::entitlements::readouts::CurrentUsage;
use crate::http::idempotency::HoldsSecret;
use crate::ids::{CustomerSessionId, InvoiceId};
use crate::tenancy::sessions::{self, CreateSession, CreatedSession, CustomerSession, SessionCtx};
use crate::tenancy::TenantCtx;
use crate::AppState;
use axum::Extension;

#[utoipa::path(post, path = "/v1/customer_sessions", tag = "customer_sessions",
    request_body = CreateSession,
    responses((status = 201, description = "The token is shown only here", body = CreatedSession),
              (status = 400, description = "invalid_ttl", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn create_session(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<CreateSession>,
) -> ApiResult<(
    StatusCode,
    Extension<HoldsSecret>,
    axum::Json<CreatedSession>,
)> {
    let now = ctx.now(&state.clock);
    let caller = (&origin, &ctx.tenant_id);
    let created = sessions::create(&state.db, &state.clock, caller, &body, now).await?;
    Ok((
        StatusCode::CREATED,
        Extension(HoldsSecret),
        axum::Json(created),
    ))
}

#[utoipa::path(delete, path = "/v1/customer_sessions/{id}", tag = "customer_sessions",
    params(("id" = String, Path, description = "Session id (`csn_…`)")),
    responses((status = 200, description = "Revoked at once", body = CustomerSession),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<CustomerSessionId>,
) -> ApiResult<axum::Json<CustomerSession>> {
    let now = ctx.now(&state.clock);
    let caller = (&origin, &ctx.tenant_id);
    Ok(axum::Json(
        sessions::revoke(&state.db, caller, &id, now).await?,
    ))
}

#[utoipa::path(get, path = "/v1/me", operation_id = "me", tag = "me",
    responses((status = 200, description = "The session's customer", body = Customer),
              (status = 401, body = crate::http::error::ErrorBody)))]
pub async fn me(State(state): State<AppState>, s: SessionCtx) -> ApiResult<axum::Json<Customer>> {
    Ok(axum::Json(
        customers::get(&state.db, &s.tenant.tenant_id, &s.customer_id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/me/entitlements", operation_id = "me_entitlements", tag = "me",
    responses((status = 200, body = EntitlementList)))]
pub async fn entitlements(
    State(state): State<AppState>,
    s: SessionCtx,
) -> ApiResult<axum::Json<EntitlementList>> {
    Ok(axum::Json(
        state.entitlements.list(&s.tenant, &s.customer_id).await?,
    ))
}

/// `POST /v1/me/check`: the customer is the session's.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeCheck {
    pub feature: String,
    /// Default 1.
    pub quantity: Option<Qty>,
}

#[utoipa::path(post, path = "/v1/me/check", operation_id = "me_check", tag = "me", request_body = MeCheck,
    responses((status = 200, body = CheckResult), (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    me: MeCaller,
    Json(body): Json<MeCheck>,
) -> ApiResult<axum::Json<CheckResult>> {
    let input = CheckInput {
        customer: me.customer,
        feature: body.feature,
        quantity: body.quantity,
    };
    Ok(axum::Json(
        state.entitlements.check(&me.caller, &input).await?,
    ))
}

#[utoipa::path(get, path = "/v1/me/usage", operation_id = "me_usage", tag = "me",
    responses((status = 200, description = "Per-feature totals for the current period", body = CurrentUsage)))]
pub async fn usage(
    State(state): State<AppState>,
    s: SessionCtx,
) -> ApiResult<axum::Json<CurrentUsage>> {
    Ok(axum::Json(
        state
            .entitlements
            .current_usage(&s.tenant, &s.customer_id)
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/me/subscription", operation_id = "me_subscription", tag = "me",
    responses((status = 200, body = Subscription),
              (status = 404, description = "subscription_not_found", body = crate::http::error::ErrorBody)))]
pub async fn subscription(
    State(state): State<AppState>,
    s: SessionCtx,
) -> ApiResult<axum::Json<Subscription>> {
    Ok(axum::Json(
        subs::live_for_customer(&state.db, &s.tenant.tenant_id, &s.customer_id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/me/invoices", operation_id = "me_invoices", tag = "me", params(PageParams),
    responses((status = 200, description = "The customer's invoices, newest first", body = List<Invoice>)))]
pub async fn invoices(
    State(state): State<AppState>,
    s: SessionCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Invoice>>> {
    let limit = page.limit()?;
    let rows = invoicing::for_customer(
        &state.db,
        &s.tenant.tenant_id,
        &s.customer_id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[utoipa::path(get, path = "/v1/me/invoices/{id}/pdf", operation_id = "me_invoice_pdf", tag = "me",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice as a PDF", content_type = "application/pdf"),
              (status = 404, description = "Not this customer's invoice", body = crate::http::error::ErrorBody)))]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    s: SessionCtx,
    IdPath(id): IdPath<InvoiceId>,
) -> ApiResult<Response> {
    let owner = Some(s.customer_id.as_str());
    let (number, bytes) = invoicing::pdf(&state.db, &s.tenant.tenant_id, &id, owner).await?;
    Ok(pdf_response(&number, bytes))
}

/// A PDF answer, shown inline and named after the invoice number.
pub fn pdf_response(number: &str, bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{number}.pdf\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/me/upcoming_invoice", operation_id = "me_upcoming_invoice", tag = "me",
    responses((status = 200, body = UpcomingInvoice),
              (status = 404, description = "subscription_not_found", body = crate::http::error::ErrorBody)))]
pub async fn upcoming_invoice(
    State(state): State<AppState>,
    s: SessionCtx,
) -> ApiResult<axum::Json<UpcomingInvoice>> {
    Ok(axum::Json(
        invoicing::upcoming(&state.db, &state.plans, &s.tenant.tenant_id, &s.customer_id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/me/members", operation_id = "me_members", tag = "me", params(PageParams),
    responses((status = 200, description = "The organisation's members in id order", body = List<Member>)))]
pub async fn list_members(
    State(state): State<AppState>,
    s: SessionCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Member>>> {
    let limit = page.limit()?;
    let rows = members::list(
        &state.db,
        &s.tenant.tenant_id,
        &s.customer_id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[utoipa::path(get, path = "/v1/me/export", operation_id = "me_export", tag = "me",
    responses((status = 200, description = "Everything held about the customer", body = Export)))]
pub async fn export(State(state): State<AppState>, s: SessionCtx) -> ApiResult<axum::Json<Export>> {
    Ok(axum::Json(
        export::export(&state.db, &s.tenant.tenant_id, &s.customer_id).await?,
    ))
}

/// `POST /v1/me/subscription/change`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeChange {
    pub plan: String,
    /// Default: the current interval.
    pub interval: Option<Interval>,
}

#[utoipa::path(post, path = "/v1/me/subscription/change", operation_id = "me_change_subscription", tag = "me", request_body = MeChange,
    responses((status = 200, description = "Upgrades now with proration, downgrades at period end", body = Subscription),
              (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn change_subscription(
    State(state): State<AppState>,
    s: SessionCtx,
    origin: Origin,
    Json(body): Json<MeChange>,
) -> ApiResult<axum::Json<Subscription>> {
    let tenant_id = &s.tenant.tenant_id;
    let sub = subs::live_for_customer(&state.db, tenant_id, &s.customer_id).await?;
    let change = ChangeSubscription {
        plan: body.plan,
        interval: body.interval,
        when: None,
        version: None,
        price_overrides: None,
    };
    let now = s.tenant.now(&state.clock);
    let plans = &state.plans;
    Ok(axum::Json(
        subs::change(&state.db, &origin, plans, tenant_id, &sub.id, &change, now).await?,
    ))
}

/// `POST /v1/me/subscription/cancel`: a session cancels at period end only.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeCancel {}

#[utoipa::path(post, path = "/v1/me/subscription/cancel", operation_id = "me_cancel_subscription", tag = "me",
    responses((status = 200, description = "Cancels at the end of the current period", body = Subscription),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn cancel_subscription(
    State(state): State<AppState>,
    s: SessionCtx,
    origin: Origin,
    OptionalJson(_body): OptionalJson<MeCancel>,
) -> ApiResult<axum::Json<Subscription>> {
    let tenant_id = &s.tenant.tenant_id;
    let sub = subs::live_for_customer(&state.db, tenant_id, &s.customer_id).await?;
    let now = s.tenant.now(&state.clock);
    Ok(axum::Json(
        subs::cancel(
            &state.db,
            &origin,
            &state.plans,
            tenant_id,
            &sub.id,
            true,
            now,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/v1/me/subscription/reactivate", operation_id = "me_reactivate_subscription", tag = "me",
    responses((status = 200, body = Subscription),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "not_canceled or subscription_ended", body = crate::http::error::ErrorBody)))]
pub async fn reactivate_subscription(
    State(state): State<AppState>,
    s: SessionCtx,
    origin: Origin,
) -> ApiResult<axum::Json<Subscription>> {
    let tenant_id = &s.tenant.tenant_id;
    let sub = subs::live_for_customer(&state.db, tenant_id, &s.customer_id).await?;
    let now = s.tenant.now(&state.clock);
    Ok(axum::Json(
        subs::reactivate(&state.db, &origin, tenant_id, &sub.id, now).await?,
    ))
}
