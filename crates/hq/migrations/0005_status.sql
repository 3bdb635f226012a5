-- The newest status each agent sent (its own `at`), found without reading
-- the agent's other messages: a status older than it is a replay and is
-- refused (crates/hq/src/service/status.rs). Only status messages are in
-- it, so the records' and receipts' messages, the bulk of the ledger, pay
-- nothing for it. Portable SQL: SQLite and PostgreSQL 15 both use a partial
-- index when the query's condition names the same `topic_kind`.
CREATE INDEX messages_status ON messages (agent, at) WHERE topic_kind = 'status';
