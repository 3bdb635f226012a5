-- API tokens: the secret is shown once when made and kept only as its
-- SHA-256 (a random 256-bit secret needs no slow hash). A revoked token
-- stays listed with when it was revoked.
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
