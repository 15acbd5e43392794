-- Of a run's accepted samples that have a reference answer, how many final answers match it
-- (compared as trimmed text, commas removed)? A rough accuracy check of the kept data.
--   psql "$(foldem db url --libpq)" -v run_id=RUN_ID -f sql/queries/answer_agreement.sql
--   (without -v run_id=...: the latest run)
\ir include/latest_run.psql
SELECT
    count(*)                                                      AS accepted_with_reference,
    count(*) FILTER (WHERE replace(trim(final_answer), ',', '')
                         = replace(trim(reference_answer), ',', '')) AS matching,
    round(100.0 * count(*) FILTER (WHERE replace(trim(final_answer), ',', '')
                                       = replace(trim(reference_answer), ',', ''))
          / nullif(count(*), 0), 1)                               AS matching_pct
FROM samples
WHERE run_id = :'run_id'
  AND status = 'accepted'
  AND reference_answer IS NOT NULL;
