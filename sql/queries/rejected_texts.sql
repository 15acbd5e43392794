-- What did the rejected samples of a run actually say? For each rejection: the validator, its
-- reason and detail, and the text of the rejected stage up to the step the validator fired at
-- (the whole text when it fired after the stream ended), with the step that fired on its own.
-- Wide rows: read them with psql's expanded display (-x), a few at a time.
--   psql "$(foldem db url --libpq)" -x -v run_id=RUN_ID -f sql/queries/rejected_texts.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
WITH rejected AS (
    SELECT r.prompt_id, r.sample_index, r.stage, r.validator, r.reason_code, r.detail,
           r.step_index, r.tokens_at_fire, r.created_at, t.text, t.aborted,
           -- the stage's step separator, as the spec stored with the run gives it
           coalesce(st.spec -> 'checkpoints' ->> 'separator', E'\n') AS separator
    FROM rejections AS r
    JOIN samples AS s USING (run_id, prompt_id, sample_index)
    JOIN runs AS run USING (run_id)
    LEFT JOIN LATERAL (
        SELECT e ->> 'text' AS text, (e ->> 'aborted')::boolean AS aborted
        FROM jsonb_array_elements(s.stage_texts) AS e
        WHERE e ->> 'stage' = r.stage LIMIT 1) AS t ON true
    LEFT JOIN LATERAL (
        SELECT e AS spec FROM jsonb_array_elements(run.spec -> 'stages') AS e
        WHERE e ->> 'name' = r.stage LIMIT 1) AS st ON true
    WHERE r.run_id = :'run_id'
), cut AS (
    SELECT *,
           (string_to_array(text, separator))[step_index + 1] AS step_text,
           CASE WHEN step_index IS NULL THEN text
                ELSE array_to_string((string_to_array(text, separator))[1:step_index + 1],
                                     separator)
           END AS head
    FROM rejected
)
SELECT
    prompt_id,
    sample_index,
    stage,
    validator,
    reason_code,
    detail,
    tokens_at_fire,
    coalesce(aborted, false)                                    AS cut_in_flight,
    -- a runaway generation can be long: the first 1,000 characters of each, then '...'
    left(step_text, 1000) || CASE WHEN length(step_text) > 1000 THEN '...' ELSE '' END
                                                                AS step_that_fired,
    left(head, 1000) || CASE WHEN length(head) > 1000 THEN '...' ELSE '' END
                                                                AS text_to_the_cut
FROM cut
ORDER BY created_at DESC, prompt_id, sample_index
LIMIT 100;
