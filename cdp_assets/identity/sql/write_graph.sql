-- This run's graph, written from TEMP _nodes, _edges and _record_nodes (graph_edges.sql), the frames resolution.py
-- registers (_node_fates: each node's component and whether it is shared; _label_profiles: each component's profile;
-- _edge_refusals: the rule refusing a link, by its number; _links_out: the probabilistic links, numbered after
-- _edges; _review_out, _registry_out, _log_out), _record_labels (record_labels.sql: each record's component) and
-- _shared (shared.py: this run's shared values): TEMP _<table>_out for each table resolution.py writes.
CREATE OR REPLACE TEMP TABLE _nodes_out AS
SELECT n.idx, n.id_type, n.value, n.first_seen, f.label, f.shared, p.profile_id
FROM _nodes n JOIN _node_fates f USING (idx) LEFT JOIN _label_profiles p USING (label);
CREATE OR REPLACE TEMP TABLE _edges_out AS
WITH linked AS (
    SELECT edge, a, b, link_type, method, probability, first_seen, records, streams FROM _edges
    UNION ALL
    SELECT l.edge, l.a, l.b, 'probabilistic', 'probabilistic', l.probability, greatest(na.first_seen, nb.first_seen),
           2, []::VARCHAR[]
    FROM _links_out l JOIN _nodes na ON na.idx = l.a JOIN _nodes nb ON nb.idx = l.b
)
SELECT na.id_type AS type_a, na.value AS value_a, nb.id_type AS type_b, nb.value AS value_b,
       na.profile_id AS profile_a, nb.profile_id AS profile_b, e.link_type, e.method, e.probability, e.first_seen,
       e.records, e.streams, r.rule IS NULL AS accepted, r.rule AS refused_by
FROM linked e
JOIN _nodes_out na ON na.idx = e.a
JOIN _nodes_out nb ON nb.idx = e.b
LEFT JOIN _edge_refusals r USING (edge);
CREATE OR REPLACE TEMP TABLE _record_profiles_out AS
SELECT r.stream, r.record_id, p.profile_id
FROM _record_labels r
JOIN _label_profiles p USING (label);
-- Every identifier on its profile; a shared value on each profile holding a record that carries it, marked shared.
CREATE OR REPLACE TEMP TABLE _identifier_profiles_out AS
SELECT id_type, value, profile_id, first_seen, false AS shared FROM _nodes_out WHERE NOT shared
UNION ALL
SELECT n.id_type, n.value, p.profile_id, min(r.observed_at) AS first_seen, true AS shared
FROM _nodes_out n
JOIN _record_nodes r USING (idx)
JOIN _record_profiles_out p USING (stream, record_id)
WHERE n.shared
GROUP BY n.id_type, n.value, p.profile_id;
CREATE OR REPLACE TEMP TABLE _shared_values_out AS
SELECT s.id_type, s.value, s.reason, count(DISTINCT (r.stream, r.record_id)) AS records,
       count(DISTINCT p.profile_id) AS profiles
FROM _shared s
JOIN _nodes_out n USING (id_type, value)
JOIN _record_nodes r USING (idx)
JOIN _record_profiles_out p USING (stream, record_id)
GROUP BY s.id_type, s.value, s.reason;
CREATE OR REPLACE TEMP TABLE _profile_edges_out AS
SELECT profile_a AS profile_id, type_a, value_a, type_b, value_b, link_type, method, probability,
       first_seen, records, streams
FROM _edges_out WHERE accepted;
CREATE OR REPLACE TEMP TABLE _refused_links_out AS
SELECT $run_id AS run_id, refused_by, type_a, value_a, profile_a, type_b, value_b, profile_b, link_type,
       method, probability, first_seen, records, streams
FROM _edges_out WHERE NOT accepted;
CREATE OR REPLACE TEMP TABLE _match_review_out AS
SELECT s.unique_id_l AS record_l, s.unique_id_r AS record_r, s.probability, s.match_weight,
       pl.profile_id AS profile_l, pr.profile_id AS profile_r, $run_id AS run_id
FROM _review_out s
JOIN _record_profiles_out pl ON pl.stream || ':' || pl.record_id = s.unique_id_l
JOIN _record_profiles_out pr ON pr.stream || ':' || pr.record_id = s.unique_id_r
WHERE pl.profile_id <> pr.profile_id;
