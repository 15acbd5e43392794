-- How did each endpoint and model behave in a run: calls, retries, errors, time to first token
-- and call duration (median and 95th percentile), and tokens generated? (served_model: the
-- model the endpoint named in its replies, e.g. each recorded generator behind a replay of `*`.)
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/endpoint_latency.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    endpoint,
    model,
    served_model,
    stage,
    count(*)                                                    AS calls,
    sum(attempts - 1)                                           AS retries,
    count(*) FILTER (WHERE error IS NOT NULL)                   AS errors,
    round(CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms) AS numeric), 1)
                                                                AS p50_ttft_ms,
    round(CAST(percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS numeric), 1)
                                                                AS p95_ttft_ms,
    round(CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS numeric), 1)
                                                                AS p50_duration_ms,
    round(CAST(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS numeric), 1)
                                                                AS p95_duration_ms,
    sum(completion_tokens)                                      AS completion_tokens
FROM ledger
WHERE run_id = :'run_id'
GROUP BY endpoint, model, served_model, stage
ORDER BY endpoint, model, served_model, stage;
