-- How healthy was each endpoint day by day (UTC) over the last 14 days, across all runs:
-- calls, errors, retries, time to first token and duration (p50/p95), generation rate?
--   psql "$(foldem db url --libpq)" -f sql/queries/endpoint_health_by_day.sql
SELECT
    day,
    endpoint,
    model,
    calls,
    errors,
    error_pct,
    retries,
    p50_ttft_ms,
    p95_ttft_ms,
    p50_duration_ms,
    p95_duration_ms,
    tokens_per_s
FROM endpoint_health_daily
WHERE day >= current_date - 14
ORDER BY day DESC, endpoint, model;
