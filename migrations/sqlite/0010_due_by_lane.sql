-- First attempts and retries are claimed separately; with one due index for both, a claim of
-- retries walked past the whole backlog of first attempts (and the reverse) on every claim.
-- Each lane now has its own partial index, which the claim's WHERE clause names literally.
DROP INDEX deliveries_due_idx;
CREATE INDEX deliveries_first_due_idx ON deliveries (next_attempt_at)
    WHERE status = 'PENDING' AND attempts = 0;
CREATE INDEX deliveries_retry_due_idx ON deliveries (next_attempt_at)
    WHERE status = 'PENDING' AND attempts > 0;
