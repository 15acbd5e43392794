-- What share of the samples did each validator reject, day by day (UTC), over the last 14 days
-- and all runs? (The denominator is every sample that ran the stage that day, from
-- stage_outcomes_daily, so validators that rejected nothing in some runs are not overstated.)
--   psql "$(foldem db url --libpq)" -f sql/queries/rejection_rate_by_day.sql
WITH stage_samples AS (
    SELECT day, stage, sum(samples) AS samples
    FROM stage_outcomes_daily
    WHERE day >= current_date - 14
    GROUP BY day, stage
)
SELECT
    v.day,
    v.stage,
    v.validator,
    sum(v.rejections)                                           AS rejections,
    s.samples                                                   AS samples_in_stage,
    round(100.0 * sum(v.rejections) / nullif(s.samples, 0), 2)  AS rejection_pct
FROM rejection_rate_daily AS v
JOIN stage_samples AS s USING (day, stage)
GROUP BY v.day, v.stage, v.validator, s.samples
ORDER BY v.day DESC, v.stage, rejections DESC, v.validator;
