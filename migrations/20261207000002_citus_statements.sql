-- Statements that run the same on Citus as on one PostgreSQL (SPEC §14). Citus runs an UPDATE
-- on a distributed table only if every function that reads a column in it is IMMUTABLE (it
-- may run the statement on a shard's node, where STABLE functions could differ).

-- Text with every occurrence of each of `values` replaced by "[erased]", as
-- `tollgate_scrub_values` does inside a JSON document (erasure of an error message that
-- quoted an email address). `to_jsonb` of text is STABLE only because it may call a type's
-- output function; for text it never does.
CREATE FUNCTION tollgate_scrub_text(p_text text, p_values text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT tollgate_scrub_values(to_jsonb(p_text), p_values) #>> '{}'
$$;
