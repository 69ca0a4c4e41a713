-- The origins a tenant's customer sessions may be used from in a browser (SPEC §9,
-- "Browsers"): serialized origins, `scheme://host[:port]`; empty means any.
-- In a DO block: Citus ships an ALTER TABLE on a distributed table as its own query text
-- (docs/DEVELOPING.md).
DO $$
BEGIN
    EXECUTE $ddl$ALTER TABLE tenants ADD COLUMN cors_origins text[] NOT NULL DEFAULT '{}'$ddl$;
END;
$$;
