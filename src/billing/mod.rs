//! Billing: the subscription lifecycle, invoices, the due-work runner and invoice PDFs.

pub mod due;
pub mod dunning;
pub mod invoices;
pub mod lifecycle;
pub mod pdf;
