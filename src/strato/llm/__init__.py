"""LLM inference clusters: hardware and model catalogs and per-iteration performance models."""
