-- How many tokens did each of the last 20 runs use and save by aborting, and how much of the
-- completion count is a client-side estimate rather than the server's own usage figure?
--   psql "$(foldem db url --libpq)" -f sql/queries/tokens_per_run.sql
SELECT
    r.run_id,
    r.job_name,
    r.status,
    r.started_at,
    count(l.call_id)                                        AS calls,
    count(l.call_id) FILTER (WHERE l.aborted)               AS aborted_calls,
    coalesce(sum(l.prompt_tokens), 0)                       AS prompt_tokens,
    coalesce(sum(l.completion_tokens), 0)                   AS completion_tokens,
    coalesce(sum(l.tokens_saved), 0)                        AS tokens_saved,
    round(100.0 * sum(l.tokens_saved)
          / nullif(sum(l.completion_tokens) + sum(l.tokens_saved), 0), 1) AS saved_pct,
    coalesce(sum(l.completion_tokens)
             FILTER (WHERE l.count_source = 'tokenizer_estimate'), 0) AS estimated_completion_tokens
FROM runs AS r
LEFT JOIN ledger AS l ON l.run_id = r.run_id
GROUP BY r.run_id, r.job_name, r.status, r.started_at
ORDER BY r.started_at DESC
LIMIT 20;
