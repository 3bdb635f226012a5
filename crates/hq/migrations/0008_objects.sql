-- Where each offloaded record is in the evidence store, as its agent
-- verified it there and reported it (`segment.offloaded`): the store
-- (endpoint and bucket), the object keys, the SHA-256 of the manifest
-- object and of the media object. One row per record; a report heard again
-- changes nothing. The periodic check compares the media object's digest
-- with the one the record's signed manifest names (`object.mismatch`).
CREATE TABLE objects (
    agent TEXT NOT NULL,
    camera TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    segment_id TEXT NOT NULL,
    store TEXT NOT NULL,
    manifest_key TEXT NOT NULL,
    manifest_object_sha256 TEXT NOT NULL,
    media_key TEXT,
    ciphertext_sha256 TEXT,
    bytes BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (agent, camera, sequence)
);
CREATE INDEX objects_received ON objects (received_at);
