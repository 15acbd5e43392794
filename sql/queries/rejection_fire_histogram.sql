-- How far into the stage does each validator fire in a run — at what fraction of the stage's
-- expected length — and how many of those rejections cut the stream in flight rather than
-- after the call had finished? (Buckets from the view rejection_fire_points.)
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/rejection_fire_histogram.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    fraction_bucket,
    validator,
    sum(rejections)                                             AS rejections,
    coalesce(sum(rejections) FILTER (WHERE cut_stream), 0)      AS cut_in_flight,
    round(sum(tokens_at_fire_total) / sum(rejections))          AS avg_tokens_at_fire
FROM rejection_fire_points
WHERE run_id = :'run_id'
GROUP BY fraction_from, fraction_bucket, validator
ORDER BY fraction_from NULLS LAST, validator;
