-- Tenant state and secrets, encrypted at rest. Values and data keys are BLOBs (BYTEA on
-- PostgreSQL); key-value keys are stored in the clear (they are ordered for prefix listing),
-- values never are.

-- Data keys, one per tenant and scope (`kv:NAMESPACE`, `secrets`) and version, wrapped by the
-- key-encryption key named by `kek_id`. Deleting a row destroys what it sealed.
CREATE TABLE data_keys (
    tenant_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    wrapped     BLOB NOT NULL,
    kek_id      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope, version)
);

CREATE TABLE kv_entries (
    tenant_id    TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    key          BLOB NOT NULL,
    sealed       BLOB NOT NULL,
    key_version  BIGINT NOT NULL,
    value_bytes  BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, namespace, key)
);

-- Per-tenant totals for the key and byte quotas, kept in the same transaction as each write.
CREATE TABLE kv_usage (
    tenant_id  TEXT PRIMARY KEY,
    keys       BIGINT NOT NULL,
    bytes      BIGINT NOT NULL
);

CREATE TABLE secrets (
    tenant_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    sealed       BLOB NOT NULL,
    key_version  BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

-- A value sealed under the key-encryption key at first use: a wrong key is detected at
-- start-up, before anything is read or written with it.
CREATE TABLE kek_check (
    id      TEXT PRIMARY KEY,
    kek_id  TEXT NOT NULL,
    sealed  BLOB NOT NULL
);

-- The server's Ed25519 signing keys for short-lived tokens, the seed wrapped by the
-- key-encryption key; the newest signs, all are published (JWKS) until removed.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    wrapped     BLOB NOT NULL,
    kek_id      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
