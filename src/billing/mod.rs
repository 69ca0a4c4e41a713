//! Billing: the subscription lifecycle, invoices, the due-work runner, dunning, invoice PDFs
//! and the read models (`views`) the API and webhook payloads share.

pub mod addons;
pub mod balance;
pub mod coupons;
pub mod credit;
pub mod due;
pub mod dunning;
pub mod invoice_items;
pub mod invoices;
pub mod invoicing;
pub mod lifecycle;
pub mod pdf;
pub mod seats;
pub mod subscribing;
pub mod subscriptions;
pub mod test_clock;
pub mod views;
