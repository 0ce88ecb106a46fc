-- Survivorship candidates: every value a profile's records hold for each trait, with where it came from.
-- Filled in by profiles.traits_sql: one SELECT per rule candidate (profiles.TRAITS); survivors.sql picks the winners.
CREATE OR REPLACE TEMP TABLE _trait_candidates AS
{candidates}
