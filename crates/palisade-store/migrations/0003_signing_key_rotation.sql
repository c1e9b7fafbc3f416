-- Token-signing key rotation. A retired key's private seed is deleted from signing_keys at
-- rotation (it never signs again); its public key stays here, published in the JWKS until
-- every token it signed has expired, so verifiers never see a valid token they cannot check.
CREATE TABLE retired_signing_keys (
    kid                 TEXT PRIMARY KEY,
    jwk                 TEXT NOT NULL,
    retired_ms          BIGINT NOT NULL,
    published_until_ms  BIGINT NOT NULL
);
