-- What in-flight step judging cost and what it bought, per run: judge calls and their tokens
-- (mostly prompt: each call quotes the solution so far) beside the generation tokens, and how
-- many samples the judge rejected. The analytics views count judge calls under their stage;
-- this query keeps them apart by the ledger's call_kind.
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/step_judge_cost.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    l.call_kind,
    count(*)                                        AS calls,
    count(DISTINCT (l.prompt_id, l.sample_index))   AS samples,
    sum(l.prompt_tokens)                            AS prompt_tokens,
    sum(l.completion_tokens)                        AS completion_tokens,
    round(avg(l.duration_ms))                       AS mean_ms,
    (SELECT count(*) FROM rejections r
      WHERE r.run_id = :'run_id' AND r.validator = 'step_judge') AS rejected_by_judge
FROM ledger AS l
WHERE l.run_id = :'run_id'
GROUP BY l.call_kind
ORDER BY l.call_kind;
