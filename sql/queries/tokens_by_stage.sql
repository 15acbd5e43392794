-- Where did a run's tokens go, stage by stage: prompt and completion tokens, how much of the
-- completion went into samples that were rejected anyway, what aborting saved, and which
-- figures the server reported versus the client estimated?
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/tokens_by_stage.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    stage,
    count_source,
    calls,
    aborted_calls,
    prompt_tokens,
    completion_tokens,
    completion_tokens_rejected,
    round(100.0 * completion_tokens_rejected / nullif(completion_tokens, 0), 1)
                                                                AS rejected_share_pct,
    tokens_saved,
    saved_pct
FROM run_token_usage
WHERE run_id = :'run_id'
ORDER BY stage, count_source;
