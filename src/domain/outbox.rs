//! What the Stripe outbox carries: one kind per thing Stripe must learn.

/// The kind of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// Create the Stripe customer of a Tollgate customer.
    Customer,
    /// Send a finalized invoice (its lines), finalize it in Stripe and collect it.
    Invoice,
    /// Collect an invoice (a dunning retry), or record a payment made out of band.
    InvoicePayment,
    /// Void an invoice voided in Tollgate.
    InvoiceVoid,
    /// One Billing Meter event for one usage event.
    MeterEvent,
    /// A credit note issued on an invoice (`resource_id` is the invoice).
    CreditNote,
    /// Clear the email and name of an erased customer's Stripe customer.
    CustomerErase,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Customer => "customer",
            OutboxKind::Invoice => "invoice",
            OutboxKind::InvoicePayment => "invoice_payment",
            OutboxKind::InvoiceVoid => "invoice_void",
            OutboxKind::MeterEvent => "meter_event",
            OutboxKind::CreditNote => "credit_note",
            OutboxKind::CustomerErase => "customer_erase",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxKind> {
        Some(match s {
            "customer" => OutboxKind::Customer,
            "invoice" => OutboxKind::Invoice,
            "invoice_payment" => OutboxKind::InvoicePayment,
            "invoice_void" => OutboxKind::InvoiceVoid,
            "credit_note" => OutboxKind::CreditNote,
            "meter_event" => OutboxKind::MeterEvent,
            "customer_erase" => OutboxKind::CustomerErase,
            _ => return None,
        })
    }
}
