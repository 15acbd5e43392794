-- Where in the generation do rejections fire in a run: at which stage and checkpoint, how many
-- tokens into the stage, and at what fraction of the stage's expected length?
-- (The earlier they fire, the more tokens in-flight rejection saves.)
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/where_rejections_fire.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    stage,
    checkpoint,
    count(*)                                                    AS rejections,
    round(avg(tokens_at_fire))                                  AS avg_tokens_at_fire,
    min(tokens_at_fire)                                         AS min_tokens_at_fire,
    max(tokens_at_fire)                                         AS max_tokens_at_fire,
    round(CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY fraction_at_fire) AS numeric), 2)
                                                                AS median_fraction_at_fire,
    round(avg(step_index), 1)                                   AS avg_step_index
FROM rejections
WHERE run_id = :'run_id'
GROUP BY stage, checkpoint
ORDER BY stage, checkpoint;
