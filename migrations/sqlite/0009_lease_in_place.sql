-- A claim finds its rows by id (UPDATE … RETURNING id), so the claim token needs no index.
DROP INDEX deliveries_claim_idx;
