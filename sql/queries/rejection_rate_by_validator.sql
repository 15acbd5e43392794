-- Which validators rejected the most samples in a run, and what share of the run's samples
-- (and of its rejections) did each validator and reason code account for?
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/rejection_rate_by_validator.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
WITH total AS (
    SELECT count(*) AS samples FROM samples WHERE run_id = :'run_id'
)
SELECT
    r.stage,
    r.validator,
    r.reason_code,
    count(*)                                                AS rejections,
    round(100.0 * count(*) / nullif(total.samples, 0), 2)   AS pct_of_samples,
    round(100.0 * count(*) / sum(count(*)) OVER (), 2)      AS pct_of_rejections
FROM rejections AS r
CROSS JOIN total
WHERE r.run_id = :'run_id'
GROUP BY r.stage, r.validator, r.reason_code, total.samples
ORDER BY rejections DESC, r.validator, r.reason_code;
