-- run_token_usage: what did each run cost in tokens, and what did aborting save? Per run, stage
-- and count_source (server_usage: the endpoint's own usage figure; tokenizer_estimate: counted
-- on the client, e.g. for an aborted stream): calls, aborted calls (cut by a rejection or by
-- early exit), prompt and completion tokens, completion tokens spent on samples that ended up
-- rejected, and tokens saved (expected length minus what an aborted call generated).
--   SELECT stage, count_source, completion_tokens, tokens_saved, saved_pct
--   FROM run_token_usage WHERE run_id = '...';
-- All counts add up across stages, count sources and runs (saved_pct does not: recompute it).
CREATE OR REPLACE VIEW run_token_usage AS
SELECT
    l.run_id,
    r.job_name,
    r.started_at                                                    AS run_started_at,
    l.stage,
    l.count_source,
    count(*)                                                        AS calls,
    count(*) FILTER (WHERE l.aborted)                               AS aborted_calls,
    count(*) FILTER (WHERE l.abort_reason = 'rejected')             AS calls_cut_by_rejection,
    count(*) FILTER (WHERE l.abort_reason = 'early_exit')           AS calls_cut_by_early_exit,
    coalesce(sum(l.prompt_tokens), 0)                               AS prompt_tokens,
    sum(l.completion_tokens)                                        AS completion_tokens,
    coalesce(sum(l.completion_tokens) FILTER (WHERE s.status = 'rejected'), 0)
                                                                    AS completion_tokens_rejected,
    coalesce(sum(l.prompt_tokens), 0) + sum(l.completion_tokens)    AS total_tokens,
    sum(l.tokens_saved)                                             AS tokens_saved,
    round(100.0 * sum(l.tokens_saved)
          / nullif(sum(l.completion_tokens) + sum(l.tokens_saved), 0), 1) AS saved_pct
FROM ledger AS l
JOIN runs AS r ON r.run_id = l.run_id
LEFT JOIN samples AS s
       ON s.run_id = l.run_id AND s.prompt_id = l.prompt_id AND s.sample_index = l.sample_index
GROUP BY l.run_id, r.job_name, r.started_at, l.stage, l.count_source;
