-- Early exit by agreement (`early_exit: {agreement: k}` in the job): per prompt of a run that
-- has superseded samples, how many samples were generated, kept, not needed (superseded; of
-- those, how many were cut while streaming), and what the cut streams cost and saved. A prompt
-- without superseded samples never reached agreement, or reached it with its last sample.
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/agreement_savings.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
WITH cut AS (
    SELECT prompt_id, count(*) AS cut_streams, sum(completion_tokens) AS cut_tokens,
           sum(tokens_saved) AS cut_saved
    FROM ledger
    WHERE run_id = :'run_id' AND abort_reason = 'agreement'
    GROUP BY prompt_id
)
SELECT s.prompt_id,
       count(*) FILTER (WHERE s.status <> 'superseded')      AS generated,
       count(*) FILTER (WHERE s.status = 'accepted')         AS accepted,
       count(*) FILTER (WHERE s.status = 'superseded')       AS superseded,
       coalesce(max(c.cut_streams), 0)                       AS cut_streams,
       coalesce(max(c.cut_tokens), 0)                        AS cut_stream_tokens,
       coalesce(max(c.cut_saved), 0)                         AS cut_stream_tokens_saved,
       string_agg(DISTINCT s.final_answer, ', ')
           FILTER (WHERE s.status = 'accepted')              AS accepted_answers
FROM samples AS s
LEFT JOIN cut AS c USING (prompt_id)
WHERE s.run_id = :'run_id'
GROUP BY s.prompt_id
HAVING count(*) FILTER (WHERE s.status = 'superseded') > 0
ORDER BY superseded DESC, s.prompt_id;
