"""polypythias: a data lake and SQL marts for seed-stability studies of LM pre-training.

The pipeline's stages install as subpackages: ``polypythias.extract`` (checkpoints →
lake), ``polypythias.warehouse`` (lake layout, DuckDB, dbt), ``polypythias.analyses``
(charts and the report); ``polypythias.cli`` is the command line.
"""
