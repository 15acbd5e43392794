-- run_overview: one row per run — how many samples it has in each state, what its endpoint
-- calls cost and what aborting saved.
--   SELECT * FROM run_overview ORDER BY started_at DESC LIMIT 10;
-- saved_pct = tokens_saved / (completion_tokens + tokens_saved): the share of the completion
-- tokens the run would have generated without in-flight rejection that it did not generate.
CREATE OR REPLACE VIEW run_overview AS
SELECT
    r.run_id,
    r.job_name,
    r.status,
    r.started_at,
    r.ended_at,
    r.samples_expected,
    coalesce(s.samples, 0)           AS samples,
    coalesce(s.accepted, 0)          AS accepted,
    coalesce(s.rejected, 0)          AS rejected,
    coalesce(s.failed, 0)            AS failed,
    coalesce(l.calls, 0)             AS calls,
    coalesce(l.aborted_calls, 0)     AS aborted_calls,
    coalesce(l.prompt_tokens, 0)     AS prompt_tokens,
    coalesce(l.completion_tokens, 0) AS completion_tokens,
    coalesce(l.tokens_saved, 0)      AS tokens_saved,
    round(100.0 * l.tokens_saved / nullif(l.completion_tokens + l.tokens_saved, 0), 1)
                                     AS saved_pct
FROM runs AS r
LEFT JOIN (
    SELECT run_id,
           count(*)                                     AS samples,
           count(*) FILTER (WHERE status = 'accepted') AS accepted,
           count(*) FILTER (WHERE status = 'rejected') AS rejected,
           count(*) FILTER (WHERE status = 'failed')   AS failed
    FROM samples
    GROUP BY run_id
) AS s ON s.run_id = r.run_id
LEFT JOIN (
    SELECT run_id,
           count(*)                         AS calls,
           count(*) FILTER (WHERE aborted) AS aborted_calls,
           sum(prompt_tokens)               AS prompt_tokens,
           sum(completion_tokens)           AS completion_tokens,
           sum(tokens_saved)                AS tokens_saved
    FROM ledger
    GROUP BY run_id
) AS l ON l.run_id = r.run_id;
