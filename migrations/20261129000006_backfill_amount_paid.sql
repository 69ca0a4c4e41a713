-- Invoices paid before `amount_paid` existed: what they asked when they were paid (their
-- amount due, which paying leaves as it was), so credit notes on them are bounded correctly.
UPDATE invoices SET amount_paid = amount_due WHERE status = 'paid' AND amount_paid = 0;
