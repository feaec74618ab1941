"""The base layer: config (de)serialisation and overrides, torch.distributed helpers, safe output
writes. Imports nothing else of wrel."""
