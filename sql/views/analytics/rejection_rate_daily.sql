-- rejection_rate_daily: what share of the samples that ran a stage did each validator reject,
-- per day (UTC), run, stage, endpoint and model? Rejections, the samples that ran the stage
-- (the same day, run, endpoint and model), and the rate.
--   SELECT * FROM rejection_rate_daily WHERE run_id = '...' ORDER BY rejections DESC;
-- samples_in_stage repeats for every validator of its group. To combine days or runs, take the
-- denominator from stage_outcomes_daily (sql/queries/rejection_rate_by_day.sql does).
-- A rejection with no ledger call for its stage (a stage that calls no endpoint) has NULL
-- endpoint, model and samples_in_stage, and the day it was recorded.
CREATE OR REPLACE VIEW rejection_rate_daily AS
WITH stage_calls AS (  -- one row per sample and stage (the latest call, should there be two)
    SELECT DISTINCT ON (run_id, prompt_id, sample_index, stage)
           run_id, prompt_id, sample_index, stage, endpoint, model,
           CAST(started_at AT TIME ZONE 'UTC' AS date) AS day
    FROM ledger
    ORDER BY run_id, prompt_id, sample_index, stage, started_at DESC
),
stage_samples AS (
    SELECT day, run_id, stage, endpoint, model, count(*) AS samples_in_stage
    FROM stage_calls
    GROUP BY day, run_id, stage, endpoint, model
),
validator_rejections AS (
    SELECT coalesce(c.day, CAST(r.created_at AT TIME ZONE 'UTC' AS date)) AS day,
           r.run_id, r.stage, c.endpoint, c.model, r.validator,
           count(*) AS rejections
    FROM rejections AS r
    LEFT JOIN stage_calls AS c USING (run_id, prompt_id, sample_index, stage)
    GROUP BY 1, r.run_id, r.stage, c.endpoint, c.model, r.validator
)
SELECT
    v.day,
    v.run_id,
    v.stage,
    v.endpoint,
    v.model,
    v.validator,
    v.rejections,
    s.samples_in_stage,
    round(100.0 * v.rejections / nullif(s.samples_in_stage, 0), 2) AS rejection_pct
FROM validator_rejections AS v
LEFT JOIN stage_samples AS s
       ON s.day = v.day AND s.run_id = v.run_id AND s.stage = v.stage
      AND s.endpoint = v.endpoint AND s.model = v.model;
