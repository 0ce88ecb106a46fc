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
CREATE OR REPLACE TEMP TABLE _record_labels AS
WITH nodes AS (
    SELECT r.stream, r.record_id, r.idx, r.priority, r.observed_at, l.label, l.shared, l.personal
    FROM _record_nodes r JOIN _node_labels l USING (idx)
),
own AS (
    SELECT stream, record_id, arg_min(label, (priority, idx)) AS label, min(priority) AS priority,
           arg_min(personal, (priority, idx)) AS personal
    FROM nodes WHERE NOT shared GROUP BY stream, record_id
),
strongest_shared AS (
    SELECT stream, record_id, arg_min(idx, (priority, idx)) AS idx, min(priority) AS priority,
           arg_min(label, (priority, idx)) AS label
    FROM nodes WHERE shared GROUP BY stream, record_id
),
placed AS (
    SELECT o.stream, o.record_id, o.label
    FROM own o LEFT JOIN strongest_shared s USING (stream, record_id)
    WHERE s.idx IS NULL OR o.priority <= s.priority OR o.personal
),
first_holder AS (
    SELECT n.idx, arg_min(p.label, (n.observed_at, n.stream, n.record_id)) AS label
    FROM nodes n JOIN placed p USING (stream, record_id)
    WHERE n.shared GROUP BY n.idx
)
SELECT stream, record_id, label FROM placed
UNION ALL
SELECT s.stream, s.record_id, coalesce(h.label, o.label, s.label)
FROM strongest_shared s
LEFT JOIN first_holder h USING (idx)
LEFT JOIN own o USING (stream, record_id)
WHERE NOT EXISTS (SELECT 1 FROM placed p WHERE p.stream = s.stream AND p.record_id = s.record_id);
