"""The recipe: schema, loading, merging and overrides."""
