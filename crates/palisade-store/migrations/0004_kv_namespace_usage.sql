-- Per-namespace totals for the per-extension key and byte quotas (an extension's manifest may
-- ask for less than its tenant's), kept like kv_usage in the same transaction as each write.
CREATE TABLE kv_namespace_usage (
    tenant_id  TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    keys       BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, namespace)
);

INSERT INTO kv_namespace_usage (tenant_id, namespace, keys, bytes)
    SELECT tenant_id, namespace, COUNT(*), SUM(value_bytes + LENGTH(key))
    FROM kv_entries
    GROUP BY tenant_id, namespace;
