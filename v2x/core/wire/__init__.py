"""Generated protobuf code for proto/v2x/v1 (regenerate with `python scripts/gen_proto.py`)."""
