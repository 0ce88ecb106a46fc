-- This run's graph, written from the frames resolution.py registers (_nodes_out, _edges_out,
-- _review_out, _registry_out, _log_out), in one transaction.
CREATE OR REPLACE TABLE identity.identifier_profiles AS
SELECT id_type, value, profile_id, first_seen FROM _nodes_out;
CREATE OR REPLACE TABLE identity.record_profiles AS
SELECT r.stream, r.record_id, arg_min(n.profile_id, (r.priority, n.idx)) AS profile_id
FROM _record_nodes r JOIN _nodes_out n USING (idx)
GROUP BY r.stream, r.record_id;
CREATE OR REPLACE TABLE identity.profile_edges AS
SELECT profile_a AS profile_id, type_a, value_a, type_b, value_b, link_type, method, probability,
       first_seen, records, streams
FROM _edges_out WHERE accepted;
CREATE OR REPLACE TABLE identity.refused_links AS
SELECT $run_id AS run_id, refused_by, type_a, value_a, profile_a, type_b, value_b, profile_b, link_type,
       method, probability, first_seen, records, streams
FROM _edges_out WHERE NOT accepted;
CREATE OR REPLACE TABLE identity.match_review AS
SELECT s.unique_id_l AS record_l, s.unique_id_r AS record_r, s.probability, s.match_weight,
       pl.profile_id AS profile_l, pr.profile_id AS profile_r, $run_id AS run_id
FROM _review_out s
JOIN identity.record_profiles pl ON pl.stream || ':' || pl.record_id = s.unique_id_l
JOIN identity.record_profiles pr ON pr.stream || ':' || pr.record_id = s.unique_id_r
WHERE pl.profile_id <> pr.profile_id;
DELETE FROM identity.profile_registry;
INSERT INTO identity.profile_registry SELECT * FROM _registry_out;
INSERT INTO identity.merge_log SELECT * FROM _log_out;
