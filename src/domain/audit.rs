//! The audit log's vocabulary (SPEC §12): who acted, on what. Pure: the entries themselves
//! are written by `crate::audit` in the transaction of each change.

use std::fmt;

use super::id::{
    ApiKeyId, CustomerSessionId, EndpointId, InvoiceId, InvoiceItemId, SubscriptionId, TenantId,
};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A tenant's API key (`key_…`).
    Key(ApiKeyId),
    /// The operator, through `/admin/v1`.
    Admin,
    /// The operator, through the command line.
    Cli,
    /// A customer session (`session:<id>`).
    Session(CustomerSessionId),
    /// A Stripe webhook (`stripe:<event id>`).
    Stripe(String),
    /// The due-work runner (also inside a test-clock advance).
    Worker,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Key(id) => f.write_str(id.as_str()),
            Actor::Admin => f.write_str("admin"),
            Actor::Cli => f.write_str("cli"),
            Actor::Session(id) => write!(f, "session:{id}"),
            Actor::Stripe(event) => write!(f, "stripe:{event}"),
            Actor::Worker => f.write_str("worker"),
        }
    }
}

/// Who made a change and in answer to which request: every write transaction begins with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub actor: Actor,
    /// The `x-request-id` of the request (for the worker inside a test-clock advance, the
    /// advance's).
    pub request_id: Option<String>,
}

impl Origin {
    pub fn new(actor: Actor, request_id: Option<String>) -> Self {
        Origin { actor, request_id }
    }

    /// The due-work runner on its own schedule.
    pub fn worker() -> Self {
        Origin::new(Actor::Worker, None)
    }

    /// The command line.
    pub fn cli() -> Self {
        Origin::new(Actor::Cli, None)
    }

    /// The same request, acted on by `actor` (the worker inside a test-clock advance).
    pub fn as_actor(&self, actor: Actor) -> Self {
        Origin::new(actor, self.request_id.clone())
    }
}

/// What a change was made to: `<type>/<id>`.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    Tenant(&'a TenantId),
    ApiKey(&'a ApiKeyId),
    Feature(&'a str),
    Plan(&'a str),
    Customer(&'a str),
    Member { customer: &'a str, member: &'a str },
    Subscription(&'a SubscriptionId),
    Invoice(&'a InvoiceId),
    WebhookEndpoint(&'a EndpointId),
    TestClock(&'a TenantId),
    CustomerSession(&'a CustomerSessionId),
    InvoiceItem(&'a InvoiceItemId),
    Coupon(&'a str),
    Addon(&'a str),
}

impl Resource<'_> {
    /// The type, as in `<type>.<verb>` and `<type>/<id>`.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Tenant(_) => "tenant",
            Resource::ApiKey(_) => "api_key",
            Resource::Feature(_) => "feature",
            Resource::Plan(_) => "plan",
            Resource::Customer(_) => "customer",
            Resource::Member { .. } => "member",
            Resource::Subscription(_) => "subscription",
            Resource::Invoice(_) => "invoice",
            Resource::WebhookEndpoint(_) => "webhook_endpoint",
            Resource::TestClock(_) => "test_clock",
            Resource::CustomerSession(_) => "customer_session",
            Resource::InvoiceItem(_) => "invoice_item",
            Resource::Coupon(_) => "coupon",
            Resource::Addon(_) => "addon",
        }
    }

    /// `<type>.<verb>`.
    pub fn action(&self, verb: &str) -> String {
        format!("{}.{verb}", self.kind())
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind();
        match self {
            Resource::Tenant(id) | Resource::TestClock(id) => write!(f, "{kind}/{id}"),
            Resource::ApiKey(id) => write!(f, "{kind}/{id}"),
            Resource::Feature(key)
            | Resource::Plan(key)
            | Resource::Coupon(key)
            | Resource::Addon(key) => {
                write!(f, "{kind}/{key}")
            }
            Resource::Customer(id) => write!(f, "{kind}/{id}"),
            Resource::CustomerSession(id) => write!(f, "{kind}/{id}"),
            Resource::Member { customer, member } => write!(f, "{kind}/{customer}/{member}"),
            Resource::Subscription(id) => write!(f, "{kind}/{id}"),
            Resource::Invoice(id) => write!(f, "{kind}/{id}"),
            Resource::WebhookEndpoint(id) => write!(f, "{kind}/{id}"),
            Resource::InvoiceItem(id) => write!(f, "{kind}/{id}"),
        }
    }
}

/// The personal fields of customers and members: what erasure replaces with
/// [`ERASED`] in every stored copy.
pub const PERSONAL_FIELDS: [&str; 3] = ["email", "name", "metadata"];

/// What an erased personal field reads as.
pub const ERASED: &str = "[erased]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_and_resources_read_as_spec_12_writes_them() {
        let key = <ApiKeyId as crate::domain::id::PrefixedId>::from_uuid(uuid::Uuid::nil());
        assert_eq!(
            Actor::Key(key.clone()).to_string(),
            format!("key_{}", "0".repeat(32))
        );
        assert_eq!(Actor::Stripe("evt_1".into()).to_string(), "stripe:evt_1");
        let session =
            <CustomerSessionId as crate::domain::id::PrefixedId>::from_uuid(uuid::Uuid::nil());
        assert_eq!(
            Actor::Session(session).to_string(),
            format!("session:csn_{}", "0".repeat(32))
        );
        assert_eq!(Actor::Worker.to_string(), "worker");
        let member = Resource::Member {
            customer: "org_1",
            member: "user_2",
        };
        assert_eq!(member.to_string(), "member/org_1/user_2");
        assert_eq!(member.action("added"), "member.added");
        assert_eq!(Resource::ApiKey(&key).action("revoked"), "api_key.revoked");
        assert_eq!(Resource::Plan("pro").to_string(), "plan/pro");
    }
}
