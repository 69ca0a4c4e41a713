//! The tenant console (SPEC §9): the tenant's staff sign in at `/console/login` with an API
//! key (exchanged for an HttpOnly cookie holding a console session, `tenancy::console`), then
//! see plans, customers, MRR and one customer at a time. Same page rules as the portal
//! (`http::pages`): no scripts, a nonce for the one inline style, CSRF on every form.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;

use super::error::ApiError;
use super::pages::{csrf_ok, csrf_token, new_nonce, render};
use crate::console::{self, CustomerPage, Home};
use crate::error::Kind;
use crate::portal::Deps;
use crate::tenancy::{console as sign_in, TenantCtx};
use crate::AppState;

const COOKIE: &str = "tg_console";
/// The login form's own CSRF cookie (double-submitted: there is no session yet).
const LOGIN_COOKIE: &str = "tg_console_login";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/customers/{id}", get(customer))
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginTemplate<'a> {
    nonce: &'a str,
    tenant_name: &'a str,
    csrf: &'a str,
    login_csrf: &'a str,
    error: Option<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomeTemplate<'a> {
    nonce: &'a str,
    tenant_name: &'a str,
    csrf: &'a str,
    home: &'a Home,
    chart: &'a str,
}

#[derive(Template)]
#[template(path = "console/customer.html")]
struct CustomerTemplate<'a> {
    nonce: &'a str,
    tenant_name: &'a str,
    csrf: &'a str,
    page: &'a CustomerPage,
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorTemplate<'a> {
    nonce: &'a str,
    tenant_name: &'a str,
    csrf: &'a str,
    title: &'a str,
    code: &'a str,
    message: &'a str,
}

/// A console page that failed: signed out goes to the login page; anything else is an HTML
/// error page with the status the API would answer.
enum PageError {
    SignedOut,
    Shown {
        status: StatusCode,
        code: String,
        message: String,
    },
}

impl From<crate::error::Error> for PageError {
    fn from(e: crate::error::Error) -> Self {
        if e.kind() == Some(Kind::Unauthenticated) {
            return PageError::SignedOut;
        }
        let api = ApiError::from(e);
        PageError::Shown {
            status: api.status,
            code: api.code.into_owned(),
            message: api.message.into_owned(),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(_: askama::Error) -> Self {
        PageError::Shown {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal".into(),
            message: "The page could not be shown.".into(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignedOut => Redirect::to("/console/login").into_response(),
            PageError::Shown {
                status,
                code,
                message,
            } => {
                let nonce = new_nonce();
                let title = if status == StatusCode::NOT_FOUND {
                    "Not found"
                } else if status == StatusCode::FORBIDDEN {
                    "Not allowed"
                } else {
                    "That did not work"
                };
                let page = ErrorTemplate {
                    nonce: &nonce,
                    tenant_name: "Tollgate console",
                    csrf: "",
                    title,
                    code: &code,
                    message: &message,
                };
                render(status, &page, nonce.clone())
                    .unwrap_or_else(|_| (status, message).into_response())
            }
        }
    }
}

type PageResult<T> = Result<T, PageError>;

fn deps(state: &AppState) -> Deps<'_> {
    Deps {
        db: &state.db,
        plans: &state.plans,
        entitlements: &state.entitlements,
    }
}

/// The signed-in tenant and the console token.
async fn signed_in(state: &AppState, jar: &CookieJar) -> PageResult<(TenantCtx, String)> {
    let token = jar
        .get(COOKIE)
        .map(|c| c.value().to_string())
        .ok_or(PageError::SignedOut)?;
    let ctx = sign_in::authenticate(&state.db, &token).await?;
    Ok((ctx, token))
}

fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn cookie(name: &'static str, value: String, tls: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .secure(tls)
        .same_site(SameSite::Lax)
        .path("/console")
        .build()
}

async fn login_form(
    jar: CookieJar,
    tls: bool,
    status: StatusCode,
    error: Option<(&str, &str)>,
) -> PageResult<Response> {
    let login_csrf = new_nonce();
    let nonce = new_nonce();
    let page = LoginTemplate {
        nonce: &nonce,
        tenant_name: "Tollgate console",
        csrf: "",
        login_csrf: &login_csrf,
        error,
    };
    let res = render(status, &page, nonce.clone())?;
    Ok((jar.add(cookie(LOGIN_COOKIE, login_csrf.clone(), tls)), res).into_response())
}

async fn login_page(headers: HeaderMap, jar: CookieJar) -> PageResult<Response> {
    login_form(jar, over_tls(&headers), StatusCode::OK, None).await
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    csrf: Option<String>,
    api_key: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> PageResult<Response> {
    let tls = over_tls(&headers);
    let expected = jar.get(LOGIN_COOKIE).map(|c| c.value().to_string());
    let same = matches!((&expected, &form.csrf), (Some(a), Some(b)) if a == b && !a.is_empty());
    if !same {
        let msg = "The sign-in form expired; try again.";
        return login_form(
            jar,
            tls,
            StatusCode::FORBIDDEN,
            Some(("invalid_csrf_token", msg)),
        )
        .await;
    }
    match sign_in::sign_in(&state.db, &state.clock, &form.api_key).await {
        Ok(token) => {
            let jar = jar
                .remove(Cookie::build(LOGIN_COOKIE).path("/console"))
                .add(cookie(COOKIE, token, tls));
            Ok((jar, Redirect::to("/console")).into_response())
        }
        Err(e) if e.kind() == Some(Kind::Unauthenticated) => {
            let msg = "That API key is not valid.";
            login_form(
                jar,
                tls,
                StatusCode::UNAUTHORIZED,
                Some(("invalid_api_key", msg)),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> PageResult<Response> {
    let (_, token) = signed_in(&state, &jar).await?;
    if !csrf_ok(&token, form.csrf.as_deref()) {
        return Err(PageError::Shown {
            status: StatusCode::FORBIDDEN,
            code: "invalid_csrf_token".into(),
            message: "This form did not come from this page. Nothing was changed.".into(),
        });
    }
    sign_in::sign_out(&state.db, &token).await?;
    let jar = jar.remove(Cookie::build(COOKIE).path("/console"));
    Ok((jar, Redirect::to("/console/login")).into_response())
}

#[derive(Debug, Deserialize)]
struct HomeQuery {
    q: Option<String>,
    after: Option<String>,
}

async fn home(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HomeQuery>,
) -> PageResult<Response> {
    let (ctx, token) = signed_in(&state, &jar).await?;
    let now = ctx.now(&state.clock);
    let query = q.q.as_deref().unwrap_or("");
    let home = console::home(&deps(&state), &ctx, (query, q.after.as_deref()), now).await?;
    let chart = super::chart::mrr_svg(&home.mrr).map_err(|e| {
        tracing::error!(error = %e, "MRR chart failed");
        PageError::Shown {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal".into(),
            message: "The chart could not be drawn.".into(),
        }
    })?;
    let nonce = new_nonce();
    let csrf = csrf_token(&token);
    let page = HomeTemplate {
        nonce: &nonce,
        tenant_name: &home.tenant_name,
        csrf: &csrf,
        home: &home,
        chart: &chart,
    };
    Ok(render(StatusCode::OK, &page, nonce.clone())?)
}

async fn customer(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let (ctx, token) = signed_in(&state, &jar).await?;
    let page = console::customer(&deps(&state), &ctx, &id).await?;
    let nonce = new_nonce();
    let csrf = csrf_token(&token);
    let t = CustomerTemplate {
        nonce: &nonce,
        tenant_name: &page.tenant_name,
        csrf: &csrf,
        page: &page,
    };
    Ok(render(StatusCode::OK, &t, nonce.clone())?)
}
