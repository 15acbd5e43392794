-- Is a job getting worse? Run over run, each job's last 10 runs, newest first: acceptance
-- rate, the rejection mix (each validator's share of the run's rejections), cost per accepted
-- sample, tokens saved by cutting streams — with the change from the job's previous run, so a
-- model or prompt regression in last night's run shows the morning after. (The same rows as
-- the trend table of `foldem report`.)
--   psql "$(foldem db url --libpq)" -f sql/queries/run_trends.sql
WITH per_run AS (
    SELECT r.run_id, r.job_name, r.status, r.started_at,
           (SELECT count(*) FROM samples AS s WHERE s.run_id = r.run_id)       AS samples,
           (SELECT count(*) FROM samples AS s
             WHERE s.run_id = r.run_id AND s.status = 'accepted')              AS accepted,
           (SELECT sum(cost_usd) FROM ledger AS l WHERE l.run_id = r.run_id)   AS cost_usd,
           (SELECT count(*) FROM ledger AS l
             WHERE l.run_id = r.run_id AND l.cost_usd IS NULL)                 AS unpriced_calls,
           (SELECT coalesce(sum(completion_tokens), 0) FROM ledger AS l
             WHERE l.run_id = r.run_id)                                        AS completion_tokens,
           (SELECT coalesce(sum(tokens_saved), 0) FROM ledger AS l
             WHERE l.run_id = r.run_id)                                        AS tokens_saved
    FROM runs AS r
), mix AS (
    SELECT run_id, string_agg(round(100.0 * n / total) || '% ' || validator, ', '
                              ORDER BY n DESC, validator) AS rejection_mix
    FROM (SELECT run_id, validator, count(*) AS n,
                 sum(count(*)) OVER (PARTITION BY run_id) AS total
          FROM rejections GROUP BY run_id, validator) AS per_validator
    GROUP BY run_id
), rates AS (
    SELECT p.*, coalesce(m.rejection_mix, '') AS rejection_mix,
           round(100.0 * p.accepted / nullif(p.samples, 0), 1)               AS accepted_pct,
           round(p.cost_usd / nullif(p.accepted, 0), 9)                      AS usd_per_accepted,
           round(100.0 * p.tokens_saved
                 / nullif(p.completion_tokens + p.tokens_saved, 0), 1)       AS saved_pct
    FROM per_run AS p LEFT JOIN mix AS m USING (run_id)
), changes AS (
    SELECT *,
           accepted_pct - lag(accepted_pct) OVER w                           AS accepted_pct_change,
           round(100.0 * (usd_per_accepted - lag(usd_per_accepted) OVER w)
                 / nullif(lag(usd_per_accepted) OVER w, 0), 1)              AS usd_per_accepted_change_pct,
           row_number() OVER (PARTITION BY job_name
                              ORDER BY started_at DESC, run_id DESC)         AS nth
    FROM rates
    WINDOW w AS (PARTITION BY job_name ORDER BY started_at, run_id)
)
SELECT job_name, run_id, status, started_at, samples, accepted_pct, accepted_pct_change,
       rejection_mix, usd_per_accepted, usd_per_accepted_change_pct, unpriced_calls,
       tokens_saved, saved_pct
FROM changes
WHERE nth <= 10
ORDER BY job_name, started_at DESC, run_id DESC;
