-- Each record's component (TEMP _record_labels(stream, record_id, label)), from TEMP _record_nodes (graph_edges.sql)
-- and _node_labels(idx, label, shared, personal: the component holds a person record). A shared value links nothing
-- (shared.py), so it cannot place a record by itself:
-- 1. A record is placed by its strongest identifier that is not shared (a person record by its own id, an event by
--    its login, else its email, else its device), as before shared values, when that identifier is at least as
--    strong as the record's strongest shared one, or leads to a component holding a person record.
-- 2. Else (an event of a shared login whose device is seen nowhere else, say) it goes to the value's first holder:
--    the component of the earliest record carrying it that step 1 placed. For a login that is its owner's, who
--    signed up with it; for a family device, the first login seen on it. The events of one shared value so stay
--    together with a person instead of founding a profile of their own, and no two profiles are merged.
-- 3. A shared value no record of step 1 carries leaves its records to their other identifiers, if any, else to
--    its own component.
-- Each step is a table of its own: in one statement, at a million people (23 million record nodes), DuckDB ran out of
-- its 3 GB holding the steps' intermediate results at once; apart, each spills to disk as it needs.
CREATE OR REPLACE TEMP TABLE _labelled_nodes AS
SELECT r.stream, r.record_id, r.idx, r.priority, r.observed_at, l.label, l.shared, l.personal
FROM _record_nodes r JOIN _node_labels l USING (idx);

CREATE OR REPLACE TEMP TABLE _own AS
SELECT stream, record_id, arg_min(label, (priority, idx)) AS label, min(priority) AS priority,
       arg_min(personal, (priority, idx)) AS personal
FROM _labelled_nodes WHERE NOT shared GROUP BY stream, record_id;

CREATE OR REPLACE TEMP TABLE _strongest_shared AS
SELECT stream, record_id, arg_min(idx, (priority, idx)) AS idx, min(priority) AS priority,
       arg_min(label, (priority, idx)) AS label
FROM _labelled_nodes WHERE shared GROUP BY stream, record_id;

CREATE OR REPLACE TEMP TABLE _placed AS
SELECT o.stream, o.record_id, o.label
FROM _own o LEFT JOIN _strongest_shared s USING (stream, record_id)
WHERE s.idx IS NULL OR o.priority <= s.priority OR o.personal;

CREATE OR REPLACE TEMP TABLE _record_labels AS
WITH first_holder AS (
    SELECT n.idx, arg_min(p.label, (n.observed_at, n.stream, n.record_id)) AS label
    FROM _labelled_nodes n JOIN _placed p USING (stream, record_id)
    WHERE n.shared GROUP BY n.idx
)
SELECT stream, record_id, label FROM _placed
UNION ALL
SELECT s.stream, s.record_id, coalesce(h.label, o.label, s.label)
FROM _strongest_shared s
LEFT JOIN first_holder h USING (idx)
LEFT JOIN _own o USING (stream, record_id)
WHERE NOT EXISTS (SELECT 1 FROM _placed p WHERE p.stream = s.stream AND p.record_id = s.record_id);

DROP TABLE _labelled_nodes;
DROP TABLE _own;
DROP TABLE _strongest_shared;
DROP TABLE _placed;
