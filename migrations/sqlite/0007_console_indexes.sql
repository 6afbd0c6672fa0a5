-- The console's reads of history: the attempts of one delivery (a delivery's page), and the
-- attempts of the last hour across projects (the overview's chart; retention's sweep of old
-- rows uses it too). Both keys grow with new rows, so inserts append to the right-most leaf.
CREATE INDEX callback_history_delivery_idx ON callback_history (delivery_id);
CREATE INDEX callback_history_created_idx ON callback_history (created_at);
