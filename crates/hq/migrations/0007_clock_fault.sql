-- A record whose manifest says its times cannot be trusted
-- (`clock_fault`: 'stepped' or 'impossible') is not judged by the deadline
-- its manifest states, which the wrong clock computed: the agent keeps it
-- a full period from its first trusted sweep, and the deadline it used
-- comes with the record's receipt. Until then `delete_after_ms` holds
-- 9999-12-31T23:59:59Z (never overdue); the receipt's deadline replaces
-- it (crates/hq/src/service/rollup.rs). Records kept before this
-- migration keep their stated deadline.
ALTER TABLE records ADD COLUMN clock_fault TEXT;
