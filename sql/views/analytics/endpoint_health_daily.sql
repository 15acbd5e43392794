-- endpoint_health_daily: how did each endpoint (and model) behave each day (UTC)? Calls,
-- errors, retries (attempts beyond the first), time to first token and call duration (median
-- and 95th percentile), completion tokens and the per-stream generation rate.
--   SELECT * FROM endpoint_health_daily WHERE day >= current_date - 7 ORDER BY day, endpoint;
-- Percentiles do not add up across days: for a longer period, compute them from the ledger.
CREATE OR REPLACE VIEW endpoint_health_daily AS
SELECT
    CAST(started_at AT TIME ZONE 'UTC' AS date)                         AS day,
    endpoint,
    model,
    count(*)                                                            AS calls,
    count(*) FILTER (WHERE error IS NOT NULL)                           AS errors,
    round(100.0 * count(*) FILTER (WHERE error IS NOT NULL) / count(*), 2) AS error_pct,
    sum(attempts)                                                       AS attempts,
    sum(attempts - 1)                                                   AS retries,
    count(*) FILTER (WHERE attempts > 1)                                AS calls_retried,
    max(attempts)                                                       AS max_attempts,
    count(*) FILTER (WHERE aborted)                                     AS aborted_calls,
    count(ttft_ms)                                                      AS calls_with_ttft,
    round(CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms) AS numeric), 1)
                                                                        AS p50_ttft_ms,
    round(CAST(percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS numeric), 1)
                                                                        AS p95_ttft_ms,
    round(CAST(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS numeric), 1)
                                                                        AS p50_duration_ms,
    round(CAST(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS numeric), 1)
                                                                        AS p95_duration_ms,
    round(CAST(max(duration_ms) AS numeric), 1)                         AS max_duration_ms,
    sum(completion_tokens)                                              AS completion_tokens,
    round(CAST(1000.0 * sum(completion_tokens) / nullif(sum(duration_ms), 0) AS numeric), 1)
                                                                        AS tokens_per_s
FROM ledger
GROUP BY 1, endpoint, model;
