"""Pairs in, a model out: reading image–caption pairs and splitting them (pairs), the contrastive
fine-tuning loop (finetune, its optimizer steps in steps), and retrieval recall (metrics, evaluate)."""
