-- stage_outcomes_daily: per day (UTC), run, stage, endpoint and model — how many samples ran
-- the stage, and how many of them the stage rejected, cut short or lost to an endpoint error?
-- The denominator for rejection rates: its counts add up across days and runs, so a daily or
-- weekly rate is sum(rejected) / sum(samples).
--   SELECT day, stage, sum(rejected), sum(samples) FROM stage_outcomes_daily GROUP BY 1, 2;
-- A sample "ran" a stage when the ledger has its call for that stage; the day is the call's.
CREATE OR REPLACE VIEW stage_outcomes_daily AS
WITH stage_calls AS (  -- one row per sample and stage (the latest call, should there be two)
    SELECT DISTINCT ON (run_id, prompt_id, sample_index, stage)
           run_id, prompt_id, sample_index, stage, endpoint, model, aborted,
           error IS NOT NULL AS errored,
           CAST(started_at AT TIME ZONE 'UTC' AS date) AS day
    FROM ledger
    ORDER BY run_id, prompt_id, sample_index, stage, started_at DESC
)
SELECT
    c.day,
    c.run_id,
    c.stage,
    c.endpoint,
    c.model,
    count(*)                                            AS samples,
    count(r.id)                                         AS rejected,
    count(*) FILTER (WHERE c.aborted)                   AS aborted_calls,
    count(*) FILTER (WHERE c.errored)                   AS errored_calls,
    round(100.0 * count(r.id) / count(*), 2)            AS rejection_pct
FROM stage_calls AS c
LEFT JOIN rejections AS r USING (run_id, prompt_id, sample_index, stage)
GROUP BY c.day, c.run_id, c.stage, c.endpoint, c.model;
