-- views.marketing_audiences: one row per person and audience they belong to now, with the purpose the audience
-- serves, every purpose the person allows, contact fields for activation, and since when they are a member.
-- `email` is the address the audience's purpose may use (`privacy.consented_addresses`: for an opt-in purpose, one
-- that consented); a person with none is no member of an audience whose purpose is opt-in.
-- Made here as TEMP _marketing_audiences for the profiles of _audience_facts (all, or those a following build makes
-- again, views/following.py), from _audience_members (audiences.yaml) and
-- _previous_members (their rows before this build).
CREATE OR REPLACE TEMP TABLE _marketing_audiences AS
SELECT
    m.profile_id, m.audience, m.purpose, f.purposes,
    ca.email, f.phone, f.first_name, f.last_name, f.country_code,
    coalesce(pm.member_since, f.as_of) AS member_since,
    f.as_of
FROM _audience_members m
JOIN _audience_facts f USING (profile_id)
JOIN privacy.consent c USING (profile_id, purpose)
LEFT JOIN privacy.consented_addresses ca USING (profile_id, purpose)
LEFT JOIN _previous_members pm USING (profile_id, audience)
WHERE list_contains(f.purposes, m.purpose) AND (ca.email IS NOT NULL OR c.basis = 'opt_out')
