-- Which samples did a run reject, by which validator, why (the human-readable detail), and how
-- far into the stage? The audit trail behind each discarded sample, newest first.
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/rejected_samples.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    s.prompt_id,
    s.sample_index,
    r.stage,
    r.checkpoint,
    r.validator,
    r.reason_code,
    r.detail,
    r.step_index,
    r.tokens_at_fire,
    left(s.problem, 80) AS problem
FROM rejections AS r
JOIN samples AS s USING (run_id, prompt_id, sample_index)
WHERE r.run_id = :'run_id'
ORDER BY r.created_at DESC, s.prompt_id, s.sample_index
LIMIT 200;
