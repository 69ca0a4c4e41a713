//! Local stand-ins for what Tollgate talks to over HTTP: a fake Stripe API (the real
//! async-stripe client talks to it) and a webhook receiver. Both bind port 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

const CUSTOMER: &str = r#"{"id":"ID","object":"customer","created":1700000000,"livemode":false}"#;
const INVOICE: &str = r#"{"id":"ID","object":"invoice","amount_due":1000,"amount_overpaid":0,"amount_paid":0,"amount_remaining":1000,"amount_shipping":0,"attempt_count":ATTEMPTS,"attempted":false,"automatic_tax":{"enabled":false},"collection_method":"charge_automatically","created":1700000000,"currency":"usd","default_tax_rates":[],"discounts":[],"issuer":{"type":"self"},"lines":{"object":"list","data":[],"has_more":false,"url":"/v1/invoices/ID/lines"},"livemode":false,"payment_settings":{},"period_end":1700000000,"period_start":1700000000,"post_payment_credit_notes_amount":0,"pre_payment_credit_notes_amount":0,"starting_balance":0,"status":"STATUS","status_transitions":{},"subtotal":1000,"total":1000,"metadata":{}}"#;
const ITEM: &str = r#"{"id":"ID","object":"invoiceitem","amount":1,"currency":"usd","customer":"cus_1","date":1700000000,"discountable":true,"livemode":false,"period":{"start":1,"end":2},"proration":false,"quantity":1,"quantity_decimal":"1"}"#;
const CREDIT_NOTE: &str = r#"{"id":"ID","object":"credit_note","amount":AMOUNT,"amount_shipping":0,"created":1700000000,"currency":"usd","customer":"cus_1","discount_amount":0,"discount_amounts":[],"invoice":"INVOICE","lines":{"object":"list","data":[],"has_more":false,"url":"/v1/credit_notes/ID/lines"},"livemode":false,"number":"CN-1","pdf":"https://example.invalid/cn.pdf","post_payment_amount":0,"pre_payment_amount":AMOUNT,"pretax_credit_amounts":[],"refunds":[],"status":"issued","subtotal":AMOUNT,"total":AMOUNT,"type":"pre_payment"}"#;
const METER_EVENT: &str = r#"{"object":"billing.meter_event","created":1700000000,"event_name":"NAME","identifier":"IDENT","livemode":false,"payload":{},"timestamp":1700000000}"#;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub form: HashMap<String, String>,
    /// Whether it was answered from the idempotency cache.
    pub replayed: bool,
    /// The `Authorization` header (`Bearer <the tenant's Stripe secret key>`).
    pub authorization: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeInvoice {
    pub customer: String,
    pub status: String,
    /// Item amounts in minor units.
    pub items: Vec<i64>,
    /// Each item's `(quantity, unit_amount_decimal)`, when it was sent with them.
    pub item_units: Vec<Option<(u64, String)>>,
    pub attempt_count: u32,
    /// Credit notes: `(amount, out_of_band_amount)` in minor units.
    pub credit_notes: Vec<(i64, Option<i64>)>,
}

#[derive(Default)]
pub struct StripeState {
    pub seen: Vec<Seen>,
    /// Idempotency key -> the first answer (Stripe replays it for a repeated key).
    cache: HashMap<String, (u16, String)>,
    pub customers: Vec<String>,
    /// Meter events created, by identifier (a count > 1 would be a double report).
    pub meter_events: HashMap<String, u32>,
    pub invoices: HashMap<String, FakeInvoice>,
    /// Invoice ids in creation order.
    pub invoice_order: Vec<String>,
    /// Requests answered so far (drives the failure pattern).
    counter: u64,
    /// Percent of requests that fail: a third with 500, a third with 429, a third are carried
    /// out but answered only after the client has timed out.
    pub fail_percent: u64,
    /// Payments are declined (402 card_declined).
    pub decline: bool,
    pub injected_failures: u64,
    /// Meter events sent again with a new idempotency key for an identifier already reported.
    pub duplicate_identifiers: u64,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    pub state: Arc<Mutex<StripeState>>,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let state = Arc::new(Mutex::new(StripeState::default()));
        let app = axum::Router::new()
            .fallback(stripe_handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeStripe {
            base: format!("http://{addr}/"),
            state,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, StripeState> {
        self.state.lock().unwrap()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn stripe_error(status: u16, kind: &str, code: &str, message: &str) -> (u16, String) {
    (
        status,
        serde_json::json!({"error": {"type": kind, "code": code, "message": message}}).to_string(),
    )
}

fn invoice_json(id: &str, inv: &FakeInvoice) -> String {
    INVOICE
        .replace("ID", id)
        .replace("STATUS", &inv.status)
        .replace("ATTEMPTS", &inv.attempt_count.to_string())
}

/// Carries a request out (the state change Stripe would make) and gives its answer.
fn carry_out(
    st: &mut StripeState,
    method: &Method,
    path: &str,
    form: &HashMap<String, String>,
) -> (u16, String) {
    let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["customers"]) => {
            let id = format!("cus_{}", st.customers.len() + 1);
            st.customers.push(id.clone());
            (200, CUSTOMER.replace("ID", &id))
        }
        ("POST", ["customers", id]) if st.customers.iter().any(|c| c == id) => {
            (200, CUSTOMER.replace("ID", id))
        }
        ("POST", ["billing", "meter_events"]) => {
            let ident = form.get("identifier").cloned().unwrap_or_default();
            if st.meter_events.contains_key(&ident) {
                st.duplicate_identifiers += 1;
                return stripe_error(
                    400,
                    "invalid_request_error",
                    "duplicate_meter_event",
                    &format!("An event with identifier {ident} already exists."),
                );
            }
            st.meter_events.insert(ident.clone(), 1);
            let name = form.get("event_name").cloned().unwrap_or_default();
            (
                200,
                METER_EVENT.replace("IDENT", &ident).replace("NAME", &name),
            )
        }
        ("POST", ["invoices"]) => {
            let id = format!("in_{}", st.invoice_order.len() + 1);
            let inv = FakeInvoice {
                customer: form.get("customer").cloned().unwrap_or_default(),
                status: "draft".into(),
                ..Default::default()
            };
            let body = invoice_json(&id, &inv);
            st.invoices.insert(id.clone(), inv);
            st.invoice_order.push(id);
            (200, body)
        }
        ("POST", ["invoiceitems"]) => {
            let invoice = form.get("invoice").cloned().unwrap_or_default();
            // Stripe takes `amount`, or `quantity` × `unit_amount_decimal`.
            let units = form
                .get("quantity")
                .and_then(|q| q.parse::<u64>().ok())
                .zip(form.get("unit_amount_decimal").cloned());
            let amount: i64 = match &units {
                Some((q, unit)) => unit.parse::<i64>().unwrap_or(0) * (*q as i64),
                None => form.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0),
            };
            match st.invoices.get_mut(&invoice) {
                Some(inv) if inv.status == "draft" => {
                    inv.items.push(amount);
                    inv.item_units.push(units);
                    (
                        200,
                        ITEM.replace("ID", &format!("ii_{}_{}", invoice, inv.items.len())),
                    )
                }
                _ => stripe_error(
                    400,
                    "invalid_request_error",
                    "invoice_not_editable",
                    "No such draft invoice.",
                ),
            }
        }
        ("POST", ["invoices", id, "finalize"]) => match st.invoices.get_mut(*id) {
            Some(inv) => {
                if inv.status == "draft" {
                    inv.status = "open".into();
                }
                (200, invoice_json(id, inv))
            }
            None => stripe_error(
                404,
                "invalid_request_error",
                "resource_missing",
                "No such invoice.",
            ),
        },
        ("POST", ["credit_notes"]) => {
            let invoice = form.get("invoice").cloned().unwrap_or_default();
            let amount: i64 = form.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
            let out_of_band: Option<i64> =
                form.get("out_of_band_amount").and_then(|a| a.parse().ok());
            match st.invoices.get_mut(&invoice) {
                Some(inv) if inv.status == "open" || inv.status == "paid" => {
                    inv.credit_notes.push((amount, out_of_band));
                    // An open invoice credited in full is settled.
                    let due: i64 = inv.items.iter().sum::<i64>()
                        - inv.credit_notes.iter().map(|c| c.0).sum::<i64>();
                    if inv.status == "open" && due <= 0 {
                        inv.status = "paid".into();
                    }
                    let n = inv.credit_notes.len();
                    (
                        200,
                        CREDIT_NOTE
                            .replace("ID", &format!("cn_{invoice}_{n}"))
                            .replace("INVOICE", &invoice)
                            .replace("AMOUNT", &amount.to_string()),
                    )
                }
                _ => stripe_error(
                    400,
                    "invalid_request_error",
                    "invoice_not_creditable",
                    "Only open or paid invoices can be credited.",
                ),
            }
        }
        ("POST", ["invoices", id, "void"]) => match st.invoices.get_mut(*id) {
            Some(inv) if inv.status == "open" => {
                inv.status = "void".into();
                (200, invoice_json(id, inv))
            }
            Some(_) => stripe_error(
                400,
                "invalid_request_error",
                "invoice_not_open",
                "Only open invoices can be voided.",
            ),
            None => stripe_error(
                404,
                "invalid_request_error",
                "resource_missing",
                "No such invoice.",
            ),
        },
        ("POST", ["invoices", id, "pay"]) => {
            let decline = st.decline;
            match st.invoices.get_mut(*id) {
                Some(inv) if inv.status == "open" => {
                    if form.get("paid_out_of_band").map(String::as_str) == Some("true") {
                        inv.status = "paid".into();
                        return (200, invoice_json(id, inv));
                    }
                    inv.attempt_count += 1;
                    if decline {
                        return stripe_error(
                            402,
                            "card_error",
                            "card_declined",
                            "Your card was declined.",
                        );
                    }
                    inv.status = "paid".into();
                    (200, invoice_json(id, inv))
                }
                Some(_) => stripe_error(
                    400,
                    "invalid_request_error",
                    "invoice_not_open",
                    "Invoice is not open.",
                ),
                None => stripe_error(
                    404,
                    "invalid_request_error",
                    "resource_missing",
                    "No such invoice.",
                ),
            }
        }
        _ => stripe_error(
            404,
            "invalid_request_error",
            "unknown_path",
            "Unknown path.",
        ),
    }
}

async fn stripe_handler(
    State(state): State<Arc<Mutex<StripeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(std::str::from_utf8(&body).unwrap_or(""));
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = uri.path().to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, body, late) = {
        let mut st = state.lock().unwrap();
        let n = st.counter;
        st.counter += 1;
        // A fixed pseudo-random pattern: the same requests fail on every run.
        let fails = st.fail_percent > 0 && (n.wrapping_mul(7919) + 13) % 100 < st.fail_percent;
        let mode = n % 3;
        if fails && mode != 2 {
            st.injected_failures += 1;
            st.seen.push(Seen {
                path: path.clone(),
                idempotency_key: key.clone(),
                form: form.clone(),
                replayed: false,
                authorization: authorization.clone(),
            });
            let (s, b) = if mode == 0 {
                stripe_error(500, "api_error", "", "Injected failure.")
            } else {
                stripe_error(
                    429,
                    "invalid_request_error",
                    "rate_limit",
                    "Too many requests.",
                )
            };
            return (StatusCode::from_u16(s).unwrap(), b).into_response();
        }
        let cached = key.as_ref().and_then(|k| st.cache.get(k).cloned());
        let replayed = cached.is_some();
        let (s, b) = match cached {
            Some(answer) => answer,
            None => {
                let answer = carry_out(&mut st, &method, &path, &form);
                if let Some(k) = &key {
                    st.cache.insert(k.clone(), answer.clone());
                }
                answer
            }
        };
        st.seen.push(Seen {
            path,
            idempotency_key: key,
            form,
            replayed,
            authorization,
        });
        if fails {
            st.injected_failures += 1;
        }
        (s, b, fails)
    };
    if late {
        // Done, but answered after the client gave up: its retry must be a replay.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    (StatusCode::from_u16(status).unwrap(), body).into_response()
}

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: String,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Default)]
pub struct ReceiverState {
    pub got: Vec<Delivery>,
    /// Answer this many requests with 500 first.
    pub fail_first: u32,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    pub fn got(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().got.clone()
    }

    /// Deliveries accepted (2xx), of one type.
    pub fn of_type(&self, t: &str) -> Vec<serde_json::Value> {
        let st = self.state.lock().unwrap();
        st.got
            .iter()
            .map(|d| d.json())
            .filter(|j| j["type"] == t)
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let mut st = state.lock().unwrap();
    if st.fail_first > 0 {
        st.fail_first -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    st.got.push(Delivery { headers, body });
    StatusCode::NO_CONTENT
}
