-- The highest numbers each agent says its broker has acknowledged
-- (telemetry `outbox.acknowledged`): per camera the highest record
-- sequence, and with camera '' the highest receipt number. `claimed_at` is
-- when HQ first heard that number. A claim above the ledger's highest that
-- is older than `ledger.claim_grace_s` is a tail the broker acknowledged
-- and lost: HQ asks for it again as for a hole (crates/hq/src/service/heal.rs).
CREATE TABLE ledger_claims (
    agent TEXT NOT NULL,
    camera TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (agent, camera)
);
