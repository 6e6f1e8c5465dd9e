-- Every claim and every write-back leaves a dead row version and a dead index entry behind, and a
-- claim's index scan walks over the dead entries ahead of the due rows until vacuum removes them.
-- PostgreSQL's defaults wait for a fifth of the table to be dead (two million rows of a ten
-- million row table) before vacuuming; a queue wants it at a hundredth, and analyzed as often,
-- so that claims stay O(batch) after a long transaction has held vacuum back. (While one does,
-- claims start after the last batch they took: see store.ClaimAfter.)
ALTER TABLE {{table}} SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
