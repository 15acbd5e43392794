-- Is a job getting worse? Run over run, each job's last 10 runs, newest first: acceptance
-- rate, the rejection mix (each validator's share of the run's rejections), cost per accepted
-- sample, tokens saved by cutting streams — with the change from the job's previous run, so a
-- model or prompt regression in last night's run shows the morning after. (The same rows as
-- the trend table of `foldem report`; both read the `run_trends` view.)
--   psql "$(foldem db url --libpq)" -f sql/queries/run_trends.sql
SELECT job_name, run_id, status, started_at, samples, accepted_pct, accepted_pct_change,
       rejection_mix, usd_per_accepted, usd_per_accepted_change_pct, unpriced_calls,
       tokens_saved, saved_pct
FROM (SELECT *, row_number() OVER (PARTITION BY job_name
                                   ORDER BY started_at DESC, run_id DESC) AS nth
      FROM run_trends) AS t
WHERE nth <= 10
ORDER BY job_name, started_at DESC, run_id DESC;
