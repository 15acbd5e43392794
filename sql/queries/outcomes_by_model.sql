-- Which model wrote a run's samples, and how did each fare: samples accepted, rejected and
-- failed, and completion tokens, per endpoint and model — the model the endpoint named in its
-- replies (`served_model`: behind a replay of `*`, the recorded generator), beside the one the
-- job asked for. A sample counts under the model of its last generation call; the tokens are
-- those of every call to that model.
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/outcomes_by_model.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
WITH last_call AS (
    SELECT DISTINCT ON (prompt_id, sample_index)
           prompt_id, sample_index, endpoint, model, served_model
    FROM ledger
    WHERE run_id = :'run_id' AND call_kind = 'generate'
    ORDER BY prompt_id, sample_index, started_at DESC
), tokens AS (
    SELECT endpoint, model, served_model, sum(completion_tokens) AS completion_tokens
    FROM ledger
    WHERE run_id = :'run_id'
    GROUP BY endpoint, model, served_model
)
SELECT
    c.endpoint,
    c.model                                                     AS model_asked,
    coalesce(c.served_model, '(not named)')                     AS model_served,
    count(*)                                                    AS samples,
    count(*) FILTER (WHERE s.status = 'accepted')               AS accepted,
    count(*) FILTER (WHERE s.status = 'rejected')               AS rejected,
    count(*) FILTER (WHERE s.status = 'failed')                 AS failed,
    round(100.0 * count(*) FILTER (WHERE s.status = 'accepted') / count(*), 1)
                                                                AS accepted_pct,
    max(t.completion_tokens)                                    AS completion_tokens
FROM samples AS s
JOIN last_call AS c USING (prompt_id, sample_index)
LEFT JOIN tokens AS t
       ON t.endpoint = c.endpoint AND t.model = c.model
      AND t.served_model IS NOT DISTINCT FROM c.served_model
WHERE s.run_id = :'run_id'
GROUP BY c.endpoint, c.model, c.served_model
ORDER BY c.endpoint, c.model, accepted_pct DESC, c.served_model;
