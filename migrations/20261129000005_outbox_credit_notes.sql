-- Credit notes reach Stripe through the outbox too.
ALTER TABLE stripe_outbox DROP CONSTRAINT stripe_outbox_kind_check;
ALTER TABLE stripe_outbox ADD CONSTRAINT stripe_outbox_kind_check
    CHECK (kind IN ('customer', 'invoice', 'invoice_payment', 'invoice_void', 'meter_event',
                    'credit_note'));
