-- Why was each sample thrown away, in the model's own words? For each rejection of a run: the
-- validator and its reason, the exact text that fired it (span_text: the stage text from
-- span_start to span_end, end exclusive, at most 500 characters) and that text in context,
-- 60 characters either side, marked [[ ]] (line breaks shown as \n). `quoted_exactly` checks the
-- quote against the stored stage text. A rejection no span of text explains (a length
-- budget, a final answer never written, a judge's verdict on the whole text) shows no span.
--   psql "$(foldem db url --libpq)" -x -v run_id=RUN_ID -f sql/queries/rejection_evidence.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
WITH evidence AS (
    SELECT r.prompt_id, r.sample_index, r.stage, r.validator, r.reason_code, r.detail,
           r.span_start, r.span_end, r.span_text, r.created_at, t.text
    FROM rejections AS r
    JOIN samples AS s USING (run_id, prompt_id, sample_index)
    LEFT JOIN LATERAL (
        SELECT e ->> 'text' AS text FROM jsonb_array_elements(s.stage_texts) AS e
        WHERE e ->> 'stage' = r.stage LIMIT 1) AS t ON true
    WHERE r.run_id = :'run_id'
)
SELECT
    prompt_id,
    sample_index,
    stage,
    validator,
    reason_code,
    span_start,
    span_end,
    span_text,
    CASE WHEN span_start IS NOT NULL THEN replace(
        CASE WHEN span_start > 60 THEN '...' ELSE '' END
        || substr(text, greatest(span_start - 60, 0) + 1, least(span_start, 60))
        || '[[' || span_text || ']]'
        || substr(text, span_end + 1, 60)
        || CASE WHEN length(text) > span_end + 60 THEN '...' ELSE '' END,
        E'\n', '\n') END                                          AS in_context,
    substr(text, span_start + 1, span_end - span_start) = span_text AS quoted_exactly,
    detail
FROM evidence
ORDER BY created_at DESC, prompt_id, sample_index
LIMIT 100;
