"""`run_trends`: each run against its job's previous run, for the morning after a nightly run.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

One row per run: samples, acceptance rate, the rejection mix (each validator's share of the
run's rejections), cost and cost per accepted sample (NULL when no call had a price), calls with
no price, tokens saved by cutting streams and their share, and the change in acceptance rate and
in cost per accepted sample from the same job's previous run. `foldem report` and
sql/queries/run_trends.sql read it. The view's text lives here, not in sql/views/analytics
(which revision 0005 reads whole): it needs the cost columns of 0014.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_TRENDS = """
CREATE VIEW run_trends AS
WITH per_run AS (
    SELECT r.run_id, r.job_name, r.status, r.started_at,
           (SELECT count(*) FROM samples AS s WHERE s.run_id = r.run_id)       AS samples,
           (SELECT count(*) FROM samples AS s
             WHERE s.run_id = r.run_id AND s.status = 'accepted')              AS accepted,
           (SELECT sum(cost_usd) FROM ledger AS l WHERE l.run_id = r.run_id)   AS cost_usd,
           (SELECT count(*) FROM ledger AS l
             WHERE l.run_id = r.run_id AND l.cost_usd IS NULL)                 AS unpriced_calls,
           (SELECT coalesce(sum(completion_tokens), 0) FROM ledger AS l
             WHERE l.run_id = r.run_id)                                        AS completion_tokens,
           (SELECT coalesce(sum(tokens_saved), 0) FROM ledger AS l
             WHERE l.run_id = r.run_id)                                        AS tokens_saved
    FROM runs AS r
), mix AS (
    SELECT run_id, string_agg(round(100.0 * n / total) || '% ' || validator, ', '
                              ORDER BY n DESC, validator) AS rejection_mix
    FROM (SELECT run_id, validator, count(*) AS n,
                 sum(count(*)) OVER (PARTITION BY run_id) AS total
          FROM rejections GROUP BY run_id, validator) AS per_validator
    GROUP BY run_id
), rates AS (
    SELECT p.*, coalesce(m.rejection_mix, '') AS rejection_mix,
           round(100.0 * p.accepted / nullif(p.samples, 0), 1)               AS accepted_pct,
           round(p.cost_usd / nullif(p.accepted, 0), 9)                      AS usd_per_accepted,
           round(100.0 * p.tokens_saved
                 / nullif(p.completion_tokens + p.tokens_saved, 0), 1)       AS saved_pct
    FROM per_run AS p LEFT JOIN mix AS m USING (run_id)
)
SELECT run_id, job_name, status, started_at, samples, accepted, accepted_pct,
       accepted_pct - lag(accepted_pct) OVER w                               AS accepted_pct_change,
       rejection_mix, cost_usd, usd_per_accepted,
       round(100.0 * (usd_per_accepted - lag(usd_per_accepted) OVER w)
             / nullif(lag(usd_per_accepted) OVER w, 0), 1)                  AS usd_per_accepted_change_pct,
       unpriced_calls, completion_tokens, tokens_saved, saved_pct
FROM rates
WINDOW w AS (PARTITION BY job_name ORDER BY started_at, run_id)
"""


def upgrade() -> None:
    op.execute(RUN_TRENDS)


def downgrade() -> None:
    op.execute("DROP VIEW run_trends")
