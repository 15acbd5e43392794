-- Where did a run's money go: per stage and call kind (generate, or step_judge for a judge
-- model scoring partial solutions), calls, prompt tokens (and how many the server served
-- from its prompt cache), completion tokens, cost, share of the run's cost, and cost per
-- accepted sample. Calls with no known price are counted in unpriced_calls, not costed.
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/cost_by_stage.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    l.stage,
    l.call_kind,
    count(*)                                                        AS calls,
    count(*) FILTER (WHERE l.cost_usd IS NULL)                      AS unpriced_calls,
    coalesce(sum(l.prompt_tokens), 0)                               AS prompt_tokens,
    coalesce(sum(l.cached_prompt_tokens), 0)                        AS cached_prompt_tokens,
    sum(l.completion_tokens)                                        AS completion_tokens,
    sum(l.cost_usd)                                                 AS cost_usd,
    round(100.0 * sum(l.cost_usd) / nullif(sum(sum(l.cost_usd)) OVER (), 0), 1)
                                                                    AS pct_of_cost,
    round(sum(l.cost_usd) / nullif((SELECT count(*) FROM samples AS s
                                    WHERE s.run_id = :'run_id' AND s.status = 'accepted'), 0),
          9)                                                        AS usd_per_accepted
FROM ledger AS l
WHERE l.run_id = :'run_id'
GROUP BY l.stage, l.call_kind
ORDER BY min(l.started_at), l.call_kind;
