//! The hosted customer portal (SPEC §9): server-rendered pages that work without JavaScript.
//!
//! - `GET /portal?session=cs_…` exchanges the token for an HttpOnly cookie and redirects to
//!   `/portal`, so the token stays out of the history and `Referer`.
//! - Every change is a POST form carrying a CSRF token derived from the session's own secret
//!   (`csrf_token`); a missing or wrong one is a 403 page that changes nothing.
//! - Every page sets a Content-Security-Policy with no scripts at all and a per-response nonce
//!   for the one `<style>` that carries the tenant's colour, and refuses to be framed.
//! - Templates are askama's (`templates/portal/`), escaped by default; the content is
//!   `crate::portal`'s.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;

use super::error::ApiError;
use super::pages::{csrf_token, new_nonce, Html};
use crate::audit::{Actor, Origin};
use crate::billing::invoicing;
use crate::billing::subscribing::{self as subs, ChangeSubscription};
use crate::ids::{InvoiceId, PrefixedId};
use crate::portal::{self, Brand, Confirm, View};
use crate::tenancy::sessions::{self, SessionCtx};
use crate::AppState;

/// The cookie that carries the session token.
const COOKIE: &str = "tg_portal";

const STYLESHEET: &str = include_str!("../../static/portal.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(page))
        .route("/portal/change", get(confirm_page).post(change))
        .route("/portal/cancel", post(cancel))
        .route("/portal/reactivate", post(reactivate))
        .route("/portal/invoices/{id}/pdf", get(invoice_pdf))
        .route("/static/portal.css", get(stylesheet))
}

#[derive(Template)]
#[template(path = "portal/page.html")]
struct PageTemplate<'a> {
    brand: &'a Brand,
    nonce: &'a str,
    csrf: &'a str,
    view: &'a View,
    notice: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "portal/confirm.html")]
struct ConfirmTemplate<'a> {
    brand: &'a Brand,
    nonce: &'a str,
    csrf: &'a str,
    confirm: &'a Confirm,
}

#[derive(Template)]
#[template(path = "portal/error.html")]
struct ErrorTemplate<'a> {
    brand: &'a Brand,
    nonce: &'a str,
    title: &'a str,
    code: &'a str,
    message: &'a str,
    back: bool,
}

fn default_brand() -> Brand {
    Brand {
        name: "Billing".into(),
        accent_color: portal::DEFAULT_ACCENT.into(),
        return_url: None,
    }
}

/// A page that failed: an HTML page with the status the API would answer.
struct PageError {
    status: StatusCode,
    code: String,
    message: String,
    brand: Option<Box<Brand>>,
}

impl PageError {
    fn new(status: StatusCode, code: &str, message: &str) -> Self {
        PageError {
            status,
            code: code.into(),
            message: message.into(),
            brand: None,
        }
    }

    fn expired() -> Self {
        PageError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "This billing link has expired or was revoked. Open billing again from the app.",
        )
    }

    fn csrf() -> Self {
        PageError::new(
            StatusCode::FORBIDDEN,
            "invalid_csrf_token",
            "This form has expired or did not come from this page. Nothing was changed.",
        )
    }

    fn with_brand(mut self, brand: Brand) -> Self {
        self.brand = Some(Box::new(brand));
        self
    }
}

impl From<crate::error::Error> for PageError {
    fn from(e: crate::error::Error) -> Self {
        // The API's mapping (status, code, message; causes logged there, never shown).
        let api = ApiError::from(e);
        PageError {
            status: api.status,
            code: api.code.into_owned(),
            message: api.message.into_owned(),
            brand: None,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let brand = self.brand.map(|b| *b).unwrap_or_else(default_brand);
        let nonce = new_nonce();
        let title = match self.status {
            StatusCode::UNAUTHORIZED => "Session expired",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "That cannot be done now",
            s if s.is_client_error() => "That did not work",
            _ => "Something went wrong",
        };
        let page = ErrorTemplate {
            brand: &brand,
            nonce: &nonce,
            title,
            code: &self.code,
            message: &self.message,
            back: self.status != StatusCode::UNAUTHORIZED,
        };
        match page.render() {
            Ok(body) => Html {
                status: self.status,
                body,
                nonce,
            }
            .into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

type PageResult<T> = Result<T, PageError>;

fn render<T: Template>(status: StatusCode, t: &T, nonce: String) -> PageResult<Response> {
    super::pages::render(status, t, nonce).map_err(|_| {
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The page could not be shown.",
        )
    })
}

/// The session the cookie names, with its token; an expired, revoked or forged one is the
/// "session expired" page.
async fn session(state: &AppState, jar: &CookieJar) -> PageResult<(SessionCtx, String)> {
    let token = jar
        .get(COOKIE)
        .map(|c| c.value().to_string())
        .ok_or_else(PageError::expired)?;
    let parsed = sessions::parse_token(&token).ok_or_else(PageError::expired)?;
    match sessions::authenticate(&state.db, &parsed).await {
        Ok(s) => Ok((s, token)),
        Err(e) if e.kind() == Some(crate::error::Kind::Unauthenticated) => {
            Err(PageError::expired())
        }
        Err(e) => Err(e.into()),
    }
}

fn deps(state: &AppState) -> portal::Deps<'_> {
    portal::Deps {
        db: &state.db,
        plans: &state.plans,
        entitlements: &state.entitlements,
    }
}

/// Whether the request reached us over TLS (directly or through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    session: Option<String>,
    notice: Option<String>,
}

/// What a `?notice=` may say (anything else is ignored: the page never echoes the URL).
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "changed" => "Your plan was changed.",
        "scheduled" => "Your plan will change at the end of the current period.",
        "canceled" => "Your plan will end at the end of the current period.",
        "reactivated" => "Your plan will continue.",
        _ => return None,
    })
}

async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(q): Query<PageQuery>,
) -> PageResult<Response> {
    if let Some(token) = q.session {
        // Exchange the token for a cookie and get it out of the URL.
        let parsed = sessions::parse_token(&token).ok_or_else(PageError::expired)?;
        let session = match sessions::authenticate(&state.db, &parsed).await {
            Ok(s) => s,
            Err(e) if e.kind() == Some(crate::error::Kind::Unauthenticated) => {
                return Err(PageError::expired())
            }
            Err(e) => return Err(e.into()),
        };
        let lifetime = (session.expires_at - state.clock.real_now())
            .num_seconds()
            .max(0);
        let cookie = Cookie::build((COOKIE, token))
            .http_only(true)
            .secure(over_tls(&headers))
            .same_site(SameSite::Lax)
            .path("/portal")
            .max_age(time::Duration::seconds(lifetime))
            .build();
        return Ok((jar.add(cookie), Redirect::to("/portal")).into_response());
    }
    let (s, token) = session(&state, &jar).await?;
    let now = s.tenant.now(&state.clock);
    let view = portal::view(&deps(&state), &s, now).await?;
    let nonce = new_nonce();
    let csrf = csrf_token(&token);
    let notice = q.notice.as_deref().and_then(notice_text);
    let t = PageTemplate {
        brand: &view.brand,
        nonce: &nonce,
        csrf: &csrf,
        view: &view,
        notice,
    };
    render(StatusCode::OK, &t, nonce.clone())
}

#[derive(Debug, Deserialize)]
struct PlanQuery {
    plan: String,
}

async fn confirm_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<PlanQuery>,
) -> PageResult<Response> {
    let (s, token) = session(&state, &jar).await?;
    let now = s.tenant.now(&state.clock);
    let brand = portal::branding(&state.db, &s).await?;
    let confirm = portal::confirm(&deps(&state), &s, &q.plan, now)
        .await
        .map_err(|e| PageError::from(e).with_brand(brand))?;
    let nonce = new_nonce();
    let csrf = csrf_token(&token);
    let t = ConfirmTemplate {
        brand: &confirm.brand,
        nonce: &nonce,
        csrf: &csrf,
        confirm: &confirm,
    };
    render(StatusCode::OK, &t, nonce.clone())
}

/// The session of a POST whose CSRF token is right; anything else changes nothing.
async fn checked(
    state: &AppState,
    jar: &CookieJar,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> PageResult<(SessionCtx, Origin, Brand)> {
    let (s, token) = session(state, jar).await?;
    let brand = portal::branding(&state.db, &s).await?;
    let ok = super::pages::csrf_ok(&token, csrf);
    if !ok {
        return Err(PageError::csrf().with_brand(brand));
    }
    let request_id = headers
        .get(super::auth::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let origin = Origin::new(Actor::Session(s.session_id.clone()), request_id);
    Ok((s, origin, brand))
}

#[derive(Debug, Deserialize)]
struct ChangeForm {
    csrf: Option<String>,
    plan: String,
}

async fn change(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<ChangeForm>,
) -> PageResult<Response> {
    let (s, origin, brand) = checked(&state, &jar, &headers, form.csrf.as_deref()).await?;
    let tenant_id = &s.tenant.tenant_id;
    let now = s.tenant.now(&state.clock);
    let done = async {
        let sub = subs::live_for_customer(&state.db, tenant_id, &s.customer_id).await?;
        let body = ChangeSubscription {
            plan: form.plan.clone(),
            interval: None,
            when: None,
            version: None,
            price_overrides: None,
        };
        let plans = &state.plans;
        subs::change(&state.db, &origin, plans, tenant_id, &sub.id, &body, now).await
    }
    .await
    .map_err(|e| PageError::from(e).with_brand(brand))?;
    let notice = if done.pending_change.is_some() {
        "scheduled"
    } else {
        "changed"
    };
    Ok(Redirect::to(&format!("/portal?notice={notice}")).into_response())
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> PageResult<Response> {
    let (s, origin, brand) = checked(&state, &jar, &headers, form.csrf.as_deref()).await?;
    let tenant_id = &s.tenant.tenant_id;
    let now = s.tenant.now(&state.clock);
    async {
        let sub = subs::live_for_customer(&state.db, tenant_id, &s.customer_id).await?;
        subs::cancel(
            &state.db,
            &origin,
            &state.plans,
            tenant_id,
            &sub.id,
            true,
            now,
        )
        .await
    }
    .await
    .map_err(|e| PageError::from(e).with_brand(brand))?;
    Ok(Redirect::to("/portal?notice=canceled").into_response())
}

async fn reactivate(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> PageResult<Response> {
    let (s, origin, brand) = checked(&state, &jar, &headers, form.csrf.as_deref()).await?;
    let tenant_id = &s.tenant.tenant_id;
    let now = s.tenant.now(&state.clock);
    async {
        let sub = subs::live_for_customer(&state.db, tenant_id, &s.customer_id).await?;
        subs::reactivate(&state.db, &origin, tenant_id, &sub.id, now).await
    }
    .await
    .map_err(|e| PageError::from(e).with_brand(brand))?;
    Ok(Redirect::to("/portal?notice=reactivated").into_response())
}

async fn invoice_pdf(
    State(state): State<AppState>,
    jar: CookieJar,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> PageResult<Response> {
    let (s, _) = session(&state, &jar).await?;
    let id = InvoiceId::parse(&id)
        .ok_or_else(|| PageError::from(crate::error::Error::no_such::<InvoiceId>()))?;
    let owner = Some(s.customer_id.as_str());
    let (number, bytes) = invoicing::pdf(&state.db, &s.tenant.tenant_id, &id, owner).await?;
    Ok(super::me::pdf_response(&number, bytes))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}
