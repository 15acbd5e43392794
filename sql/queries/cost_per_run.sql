-- What did each of the last 20 runs cost, per accepted sample, and did in-flight checking pay
-- for itself? Cost at the prices in each call's ledger row (job spec or genai-prices; calls
-- with no known price are counted in unpriced_calls and not costed). rejected_usd: generation
-- calls of samples that ended rejected, up to where they were cut; *_est: tokens a cut stream
-- never generated (the stage's expected length), at the call's output price — estimates;
-- checks_usd: step-judge calls and the calls of `judge` stages; net_saving_usd_est: the
-- estimated savings minus the checks (negative: the checks cost more than they saved).
-- A run with no priced call has every money column NULL (unknown, not $0). The same figures
-- as the run summary and `foldem report`.
--   psql "$(foldem db url --libpq)" -f sql/queries/cost_per_run.sql
WITH recent AS (
    SELECT run_id, job_name, started_at, spec FROM runs ORDER BY started_at DESC LIMIT 20
), calls AS (
    SELECT l.run_id, l.cost_usd, l.abort_reason, s.status AS sample_status,
           (l.call_kind = 'step_judge' OR l.stage IN (
               SELECT st ->> 'name' FROM jsonb_array_elements(coalesce(r.spec -> 'stages',
                                                                       '[]')) AS st
               WHERE st ->> 'kind' = 'judge'))                         AS is_check,
           round(l.tokens_saved * l.price_output_per_mtok / 1000000, 9) AS unmade_usd
    FROM recent AS r
    JOIN ledger AS l ON l.run_id = r.run_id
    LEFT JOIN samples AS s
           ON s.run_id = l.run_id AND s.prompt_id = l.prompt_id
          AND s.sample_index = l.sample_index
), per_run AS (
    SELECT run_id,
           count(*)                                                    AS calls,
           count(*) FILTER (WHERE cost_usd IS NULL)                    AS unpriced_calls,
           sum(cost_usd)                                               AS cost_usd,
           coalesce(sum(cost_usd) FILTER (WHERE NOT is_check
                                            AND sample_status = 'rejected'), 0) AS rejected_usd,
           coalesce(sum(unmade_usd) FILTER (WHERE abort_reason = 'rejected'), 0)
                                                                       AS finish_rejected_usd_est,
           coalesce(sum(unmade_usd) FILTER (WHERE abort_reason <> 'rejected'), 0)
                                                                       AS early_stops_usd_est,
           coalesce(sum(cost_usd) FILTER (WHERE is_check), 0)          AS checks_usd
    FROM calls
    GROUP BY run_id
)
SELECT
    r.run_id,
    r.job_name,
    r.started_at,
    (SELECT count(*) FROM samples AS s
      WHERE s.run_id = r.run_id AND s.status = 'accepted')           AS accepted,
    coalesce(p.calls, 0)                                              AS calls,
    coalesce(p.unpriced_calls, 0)                                     AS unpriced_calls,
    p.cost_usd,
    round(p.cost_usd / nullif((SELECT count(*) FROM samples AS s
                               WHERE s.run_id = r.run_id AND s.status = 'accepted'), 0), 9)
                                                                      AS usd_per_accepted,
    m.rejected_usd,
    m.finish_rejected_usd_est,
    m.early_stops_usd_est,
    m.checks_usd,
    m.finish_rejected_usd_est + m.early_stops_usd_est - m.checks_usd AS net_saving_usd_est
FROM recent AS r
LEFT JOIN per_run AS p ON p.run_id = r.run_id
LEFT JOIN LATERAL (  -- the parts, when the run has a cost at all
    SELECT p.rejected_usd, p.finish_rejected_usd_est, p.early_stops_usd_est, p.checks_usd
    WHERE p.cost_usd IS NOT NULL
) AS m ON true
ORDER BY r.started_at DESC, r.run_id DESC;
