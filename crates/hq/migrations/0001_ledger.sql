-- The HQ ledger: what the fleet reported, checked. One schema for SQLite
-- and PostgreSQL: only portable types (TEXT, BIGINT), instants as
-- milliseconds since the Unix epoch (UTC), flags as 0/1.

-- Gateways HQ knows: enrolled (trusted) or pending (seen, awaiting an
-- operator's approval). The device key is the Ed25519 key the agent signs
-- its manifests and receipts with (standard Base64).
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    device_key TEXT NOT NULL,
    site TEXT NOT NULL,
    description TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    approved_by TEXT,
    online BIGINT NOT NULL,
    status_at BIGINT,
    last_seen BIGINT,
    version TEXT
);

-- Every accepted message once, keyed by the SHA-256 of topic and payload:
-- a redelivery of the same bytes is recognised and changes nothing.
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    topic_kind TEXT NOT NULL,
    event TEXT,
    at BIGINT,
    received_at BIGINT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX messages_agent ON messages (agent, received_at);

-- Messages that were not trusted, with the reason. Never read into the
-- ledger unless an operator's approval of the agent replays them.
CREATE TABLE quarantine (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    agent TEXT,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    payload_bytes BIGINT NOT NULL,
    payload TEXT NOT NULL,
    replayed BIGINT NOT NULL
);

-- One row per record of a camera's chain (segment or gap), from its signed
-- manifest.
CREATE TABLE records (
    agent TEXT NOT NULL,
    camera TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    segment_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    class TEXT NOT NULL,
    delete_after_ms BIGINT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    prev_manifest_sha256 TEXT NOT NULL,
    ciphertext_sha256 TEXT,
    bytes BIGINT,
    truncated BIGINT NOT NULL,
    gap_reason TEXT,
    envelope TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (agent, camera, sequence)
);
CREATE UNIQUE INDEX records_segment ON records (agent, segment_id);
CREATE INDEX records_start ON records (start_ms);

-- Deletion receipts, verified on arrival against the enrolled key.
CREATE TABLE receipts (
    agent TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    segment_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    class TEXT NOT NULL,
    delete_after_ms BIGINT NOT NULL,
    deleted_at_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    command_id TEXT,
    manifest_sha256 TEXT NOT NULL,
    ciphertext_sha256 TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    prev_receipt_sha256 TEXT NOT NULL,
    envelope TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (agent, sequence)
);
CREATE INDEX receipts_segment ON receipts (agent, segment_id);

-- Holds the agents reported applied and released (hold id per agent).
CREATE TABLE holds (
    agent TEXT NOT NULL,
    hold TEXT NOT NULL,
    command_id TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    released_at BIGINT,
    PRIMARY KEY (agent, hold)
);

-- Each agent's answer to each command.
CREATE TABLE responses (
    command_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    code TEXT,
    reason TEXT,
    at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (command_id, agent)
);

-- The latest telemetry of each agent (QoS 0: a sample, not a record).
CREATE TABLE telemetry (
    agent TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    payload TEXT NOT NULL
);

-- Alarms, keyed so that raising one twice is one alarm: raised, and cleared
-- when what raised it is over.
CREATE TABLE alarms (
    key TEXT PRIMARY KEY,
    agent TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    raised_at BIGINT NOT NULL,
    cleared_at BIGINT
);
CREATE INDEX alarms_open ON alarms (cleared_at, raised_at);

-- Signed commands seen on the agents' command topics (issued by HQ or by
-- `sargsctl`), verified against the trusted command keys. `protects` names
-- what a hold, request or restriction keeps (`hold:ID`), `scope` its JSON.
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    issuer TEXT NOT NULL,
    target TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    protects TEXT,
    ends TEXT,
    scope TEXT,
    envelope TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
