"""The ONNX Runtime path: open_clip towers exported to ONNX, run without torch.

``export`` writes a model's graphs (torch is needed there, once); ``tokenizer`` and ``preprocess``
reproduce open_clip's text tokenising and image transform with no torch; ``encoder`` runs the
graphs with ONNX Runtime. Nothing here imports torch, torchvision or open_clip at module level.
"""
