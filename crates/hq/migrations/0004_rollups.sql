-- Rollups of the ledger, so that the compliance report and the periodic
-- check read what is exceptional or what changed, never every record. The
-- collector keeps them in the transaction that keeps a record or receipt
-- (crates/hq/src/service/rollup.rs, which states the invariant); the
-- statements below fill them from what an existing ledger already holds.
-- Portable SQL only: this one file runs on SQLite and on PostgreSQL 15.
-- The statements that fill the tables are marked (`-- backfill:begin` …
-- `-- backfill:end`): the benchmark that fills a ledger in bulk runs them.

-- Each record carries its deletion: the instant and reason of the receipt
-- that names it (of the lowest-numbered one, should several), NULL while
-- none has arrived. `+c.sequence`: sorted after the lookup by
-- receipts_segment; SQLite would otherwise walk the agent's receipts in
-- their primary key's order to avoid that sort, once per record.
ALTER TABLE records ADD COLUMN deleted_at_ms BIGINT;
ALTER TABLE records ADD COLUMN deletion_reason TEXT;
-- backfill:begin
UPDATE records SET (deleted_at_ms, deletion_reason) = (
    SELECT c.deleted_at_ms, c.reason FROM receipts c
    WHERE c.agent = records.agent AND c.segment_id = records.segment_id
    ORDER BY +c.sequence LIMIT 1)
WHERE EXISTS (SELECT 1 FROM receipts c
              WHERE c.agent = records.agent AND c.segment_id = records.segment_id);
-- backfill:end

-- Per agent, class and UTC day of the record's start (day = floor(start_ms
-- / 86400000), also before 1970: both databases divide integers towards
-- zero, hence the correction for negative instants): segment records, gap
-- records, and segment records with a receipt of any reason.
CREATE TABLE ledger_days (
    agent TEXT NOT NULL,
    class TEXT NOT NULL,
    day BIGINT NOT NULL,
    segments BIGINT NOT NULL,
    gaps BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    PRIMARY KEY (agent, class, day)
);
-- backfill:begin
INSERT INTO ledger_days (agent, class, day, segments, gaps, deleted)
SELECT agent, class, day,
    SUM(CASE WHEN kind = 'segment' THEN 1 ELSE 0 END),
    SUM(CASE WHEN kind = 'gap' THEN 1 ELSE 0 END),
    SUM(CASE WHEN kind = 'segment' AND deleted_at_ms IS NOT NULL THEN 1 ELSE 0 END)
FROM (SELECT agent, class, kind, deleted_at_ms,
        start_ms / 86400000
          - CASE WHEN start_ms < 0 AND start_ms % 86400000 <> 0 THEN 1 ELSE 0 END AS day
      FROM records) AS r
GROUP BY agent, class, day;
-- backfill:end

-- The numbering of each camera's records: the highest sequence kept, and
-- the holes below it as maximal runs [first_seq, last_seq] of sequences
-- (from 1) that no record holds.
CREATE TABLE ledger_cameras (
    agent TEXT NOT NULL,
    camera TEXT NOT NULL,
    max_sequence BIGINT NOT NULL,
    PRIMARY KEY (agent, camera)
);
-- backfill:begin
INSERT INTO ledger_cameras (agent, camera, max_sequence)
SELECT agent, camera, MAX(sequence) FROM records GROUP BY agent, camera;
-- backfill:end
CREATE TABLE ledger_holes (
    agent TEXT NOT NULL,
    camera TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (agent, camera, first_seq)
);
-- backfill:begin
INSERT INTO ledger_holes (agent, camera, first_seq, last_seq)
SELECT agent, camera, CASE WHEN prev < 1 THEN 1 ELSE prev + 1 END, sequence - 1
FROM (SELECT agent, camera, sequence,
        COALESCE(LAG(sequence) OVER (PARTITION BY agent, camera ORDER BY sequence), 0) AS prev
      FROM records) AS n
WHERE sequence > CASE WHEN prev < 1 THEN 1 ELSE prev + 1 END;
-- backfill:end

-- The same for each agent's receipts.
CREATE TABLE ledger_receipt_chains (
    agent TEXT NOT NULL,
    max_sequence BIGINT NOT NULL,
    PRIMARY KEY (agent)
);
-- backfill:begin
INSERT INTO ledger_receipt_chains (agent, max_sequence)
SELECT agent, MAX(sequence) FROM receipts GROUP BY agent;
-- backfill:end
CREATE TABLE ledger_receipt_holes (
    agent TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (agent, first_seq)
);
-- backfill:begin
INSERT INTO ledger_receipt_holes (agent, first_seq, last_seq)
SELECT agent, CASE WHEN prev < 1 THEN 1 ELSE prev + 1 END, sequence - 1
FROM (SELECT agent, sequence,
        COALESCE(LAG(sequence) OVER (PARTITION BY agent ORDER BY sequence), 0) AS prev
      FROM receipts) AS n
WHERE sequence > CASE WHEN prev < 1 THEN 1 ELSE prev + 1 END;
-- backfill:end

-- The exceptions, each found by an index on an expression that is NULL for
-- every other record: segment records without a receipt, by deadline (the
-- overdue are the oldest deadlines), and deletions at expiry, by lateness.
-- Expressions rather than partial indexes: PostgreSQL keeps statistics of
-- an index's expression only when the index is whole, and without them it
-- guesses that a third of the records match and reads them all.
CREATE INDEX records_open ON records
    ((CASE WHEN deleted_at_ms IS NULL AND kind = 'segment' THEN delete_after_ms END));
CREATE INDEX records_late ON records
    ((CASE WHEN deletion_reason = 'retention-expired' THEN deleted_at_ms - delete_after_ms END));

-- What arrived since the last periodic check.
CREATE INDEX records_received ON records (received_at);
CREATE INDEX receipts_received ON receipts (received_at);

-- How far the periodic check has looked at the chains (`received_at` of
-- the newest record or receipt it saw; crates/hq/src/service/check.rs).
-- An existing ledger was checked whole every minute before this migration:
-- the first check after it looks back one day from the newest arrival.
CREATE TABLE ledger_checks (
    what TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (what)
);
-- backfill:begin
INSERT INTO ledger_checks (what, received_at)
SELECT 'chains', m - 86400000
FROM (SELECT CASE WHEN b IS NULL OR a > b THEN a ELSE b END AS m
      FROM (SELECT (SELECT MAX(received_at) FROM records) AS a,
                   (SELECT MAX(received_at) FROM receipts) AS b) AS x) AS y
WHERE m IS NOT NULL;
-- backfill:end
