-- The identity graph's nodes and deterministic edges, from TEMP _graph_identifiers (identity.identifiers, or the
-- records of the region an incremental run resolves: resolution.py).
-- A node is one identifier value (a record's own id is one too). A record with its own id
-- links that id to each identifier it carries (a star); a record without one (a product
-- event) links its identifiers pairwise. An edge is as strong as its weaker end.
CREATE OR REPLACE TEMP TABLE _nodes AS
SELECT (row_number() OVER (ORDER BY i.id_type, i.value) - 1)::BIGINT AS idx,
       i.id_type, i.value, min(i.observed_at) AS first_seen, any_value(t.priority) AS priority
FROM _graph_identifiers i
JOIN _types t USING (id_type)
GROUP BY i.id_type, i.value;

CREATE OR REPLACE TEMP TABLE _record_nodes AS
SELECT i.stream, i.record_id, n.idx, n.id_type, n.priority, i.observed_at
FROM _graph_identifiers i
JOIN _nodes n USING (id_type, value);

-- Each link is numbered in (a, b) order: resolution holds its links as arrays in that order (graph.Edges), and
-- writes their fates back by number.
CREATE OR REPLACE TEMP TABLE _edges AS
WITH linked AS (
    SELECT a.idx AS a, b.idx AS b,
           CASE WHEN a.priority >= b.priority THEN a.id_type ELSE b.id_type END AS link_type,
           greatest(a.priority, b.priority) AS priority,
           'deterministic' AS method,
           NULL::DOUBLE AS probability,
           min(a.observed_at) AS first_seen,
           count(*) AS records,
           list(DISTINCT a.stream ORDER BY a.stream) AS streams
    FROM _record_nodes a
    JOIN _record_nodes b ON a.stream = b.stream AND a.record_id = b.record_id AND a.idx < b.idx
    WHERE a.priority = 0 OR b.priority = 0 OR NOT list_contains($record_streams, a.stream)
    GROUP BY a.idx, b.idx, link_type, greatest(a.priority, b.priority)
)
SELECT (row_number() OVER (ORDER BY a, b) - 1)::BIGINT AS edge, * FROM linked;
