"""Reading what the user hands clipdex: tables (.csv/.tsv/.jsonl/.parquet, text lists), sidecar
captions, embeddings computed elsewhere (.npy + metadata), and showing their paths in messages and
JSON. Knows files, not models or the library."""
