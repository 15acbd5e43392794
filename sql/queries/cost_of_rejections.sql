-- What did each validator's rejections cost in a run: how many completion tokens went into the
-- samples it rejected, how many of those rejections cut the stream in flight, and how many
-- tokens cutting saved (estimated from the stage's expected length)? In USD at the calls'
-- prices: what the rejected samples' calls in that stage cost (cost_usd, step-judge calls
-- included; NULL when no call had a price) and what finishing the cut streams would have cost
-- (finish_usd_est: the tokens saved at the call's output price, an estimate).
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/cost_of_rejections.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    r.stage,
    r.validator,
    count(*)                                                    AS rejections,
    count(*) FILTER (WHERE l.aborted)                           AS cut_in_flight,
    coalesce(sum(l.completion_tokens), 0)                       AS completion_tokens_spent,
    round(avg(l.completion_tokens))                             AS avg_tokens_per_rejection,
    coalesce(sum(l.tokens_saved), 0)                            AS tokens_saved,
    sum(l.cost_usd)                                             AS cost_usd,
    sum(round(l.tokens_saved * l.price_output_per_mtok / 1000000, 9)) AS finish_usd_est
FROM rejections AS r
LEFT JOIN ledger AS l USING (run_id, prompt_id, sample_index, stage)
WHERE r.run_id = :'run_id'
GROUP BY r.stage, r.validator
ORDER BY completion_tokens_spent DESC, r.validator;
