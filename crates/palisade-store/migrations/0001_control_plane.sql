-- The control plane's first schema. Plain SQL that SQLite and PostgreSQL both accept: TEXT,
-- BIGINT, no AUTOINCREMENT (sequence numbers are assigned inside the writing transaction),
-- timestamps as Unix milliseconds, digests as lowercase hex.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'decommissioned')),
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

CREATE TABLE principals (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('platform-admin', 'platform-reviewer', 'tenant-admin', 'tenant-developer', 'invoker')),
    tenant_id   TEXT REFERENCES tenants (id),
    created_ms  BIGINT NOT NULL,
    -- Platform roles have no tenant; tenant roles always have one.
    CHECK ((role LIKE 'platform-%') = (tenant_id IS NULL))
);

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    principal_id  TEXT NOT NULL REFERENCES principals (id),
    -- SHA-256 of the secret; the secret itself is never stored.
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_ms    BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL,
    revoked_ms    BIGINT
);

CREATE TABLE extensions (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE extension_versions (
    tenant_id         TEXT NOT NULL,
    name              TEXT NOT NULL,
    version           TEXT NOT NULL,
    api               TEXT NOT NULL,
    manifest          TEXT NOT NULL,
    component_sha256  TEXT NOT NULL,
    component_bytes   BIGINT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('published', 'approved', 'rejected')),
    published_ms      BIGINT NOT NULL,
    published_by      TEXT NOT NULL,
    reviewed_ms       BIGINT,
    reviewed_by       TEXT,
    review_note       TEXT,
    PRIMARY KEY (tenant_id, name, version),
    FOREIGN KEY (tenant_id, name) REFERENCES extensions (tenant_id, name)
);

-- Every deployment ever made; the active one of an extension is its highest `seq`.
CREATE TABLE deployments (
    seq               BIGINT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    name              TEXT NOT NULL,
    version           TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    previous_version  TEXT,
    deployed_ms       BIGINT NOT NULL,
    deployed_by       TEXT NOT NULL,
    FOREIGN KEY (tenant_id, name, version) REFERENCES extension_versions (tenant_id, name, version)
);
CREATE INDEX deployments_by_extension ON deployments (tenant_id, name, seq);

-- Policy layers, versioned; a version is never rewritten.
CREATE TABLE policy_versions (
    scope       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    author      TEXT NOT NULL,
    time_s      BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    change      TEXT NOT NULL CHECK (change IN ('apply', 'revert')),
    restored    BIGINT,
    sha256      TEXT NOT NULL,
    diff        TEXT NOT NULL,
    document    TEXT NOT NULL,
    PRIMARY KEY (scope, version)
);

-- Append-only and hash-chained: each row carries the hash of the row before it.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    action      TEXT NOT NULL,
    tenant_id   TEXT,
    target      TEXT NOT NULL,
    before_sha256 TEXT,
    after_sha256  TEXT,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
