"""The sync layer: reverse ETL from the team views to the tools where people act."""
