-- rejection_fire_points: where in the generation do rejections fire? Per run, stage and
-- validator, rejections counted in buckets of how far into the stage they fired: the fraction
-- of the stage's expected length (quarters up to 2.0, then "2.00+") and the completion tokens
-- generated so far (0-31, then doubling: 32-63, 64-127, ...), split by whether the rejection
-- cut the stream (in flight) or came after the call had finished. Earlier means cheaper.
--   SELECT fraction_bucket, validator, sum(rejections) FROM rejection_fire_points
--   WHERE run_id = '...' GROUP BY fraction_from, fraction_bucket, validator ORDER BY 1;
-- Bucket bounds: *_from inclusive, *_to exclusive (NULL: open-ended); fraction_from is NULL
-- when the stage had no expected length. cut_stream is NULL for a stage without a ledger call.
CREATE OR REPLACE VIEW rejection_fire_points AS
WITH stage_calls AS (  -- one row per sample and stage (the latest call, should there be two)
    SELECT DISTINCT ON (run_id, prompt_id, sample_index, stage)
           run_id, prompt_id, sample_index, stage, aborted
    FROM ledger
    ORDER BY run_id, prompt_id, sample_index, stage, started_at DESC
),
placed AS (
    SELECT r.run_id, r.stage, r.validator, r.tokens_at_fire, c.aborted AS cut_stream,
           -- width_bucket over explicit bounds: exact at the edges (no log/float rounding)
           width_bucket(r.fraction_at_fire,
                        CAST(ARRAY[0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2] AS float8[]))
               AS fraction_slot,
           width_bucket(r.tokens_at_fire,
                        ARRAY[0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]) AS tokens_slot
    FROM rejections AS r
    LEFT JOIN stage_calls AS c USING (run_id, prompt_id, sample_index, stage)
)
SELECT
    run_id,
    stage,
    validator,
    (CAST(ARRAY[0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2] AS numeric[]))[fraction_slot]
                                                        AS fraction_from,
    (CAST(ARRAY[0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2] AS numeric[]))[fraction_slot]
                                                        AS fraction_to,
    CASE WHEN fraction_slot IS NULL OR fraction_slot = 0 THEN 'unknown'
         WHEN fraction_slot = 9 THEN '2.00+'
         ELSE to_char(0.25 * (fraction_slot - 1), 'FM0.00') || '-'
              || to_char(0.25 * fraction_slot, 'FM0.00')
    END                                                 AS fraction_bucket,
    (ARRAY[0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])[tokens_slot] AS tokens_from,
    (ARRAY[32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])[tokens_slot]    AS tokens_to,
    CASE WHEN tokens_slot = 10 THEN '8192+'
         ELSE CAST((ARRAY[0, 32, 64, 128, 256, 512, 1024, 2048, 4096])[tokens_slot] AS text)
              || '-' || CAST((ARRAY[31, 63, 127, 255, 511, 1023, 2047, 4095, 8191])[tokens_slot]
                             AS text)
    END                                                 AS tokens_bucket,
    cut_stream,
    count(*)                                            AS rejections,
    sum(tokens_at_fire)                                 AS tokens_at_fire_total
FROM placed
GROUP BY run_id, stage, validator, fraction_slot, tokens_slot, cut_stream;
