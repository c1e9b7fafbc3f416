-- One host uid slot per tenant, unique, allocated when the tenant is created and kept for as
-- long as the tenant row exists (a decommissioned tenant keeps its slot), so two tenants never
-- share a jail uid and the per-uid limits (RLIMIT_NPROC) that come with it.
CREATE TABLE tenant_uid_slots (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants (id),
    slot       BIGINT NOT NULL UNIQUE
);

-- Existing tenants get slots in the order they were created (ties by id).
INSERT INTO tenant_uid_slots (tenant_id, slot)
SELECT t.id,
       (SELECT COUNT(*) FROM tenants o
         WHERE o.created_ms < t.created_ms OR (o.created_ms = t.created_ms AND o.id < t.id))
FROM tenants t;
