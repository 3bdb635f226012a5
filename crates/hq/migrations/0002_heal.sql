-- What HQ asked agents to publish again (`resend`), so that a hole is
-- asked about once: (agent, what, from) with `what` a camera id or
-- 'receipts'.
CREATE TABLE heal_requests (
    agent TEXT NOT NULL,
    what TEXT NOT NULL,
    from_sequence BIGINT NOT NULL,
    command_id TEXT NOT NULL,
    asked_at BIGINT NOT NULL,
    PRIMARY KEY (agent, what, from_sequence)
);
