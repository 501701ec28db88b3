# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Data tooling (not remote code): synthetic documents, checked JSONL documents, the chat-tokenizer trainer, AnyRes
image processors."""
