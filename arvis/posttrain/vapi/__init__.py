"""VA-π: pixel-aware policy alignment of AR generators, with the tokenizer's reconstruction as reward (issue 22;
so far its objective, :mod:`arvis.posttrain.vapi.objective`)."""
