-- rejections_by_validator: how many samples each validator rejected, per run, stage and
-- reason code.
--   SELECT * FROM rejections_by_validator WHERE run_id = '...' ORDER BY rejections DESC;
CREATE OR REPLACE VIEW rejections_by_validator AS
SELECT
    run_id,
    stage,
    validator,
    reason_code,
    count(*) AS rejections
FROM rejections
GROUP BY run_id, stage, validator, reason_code;
