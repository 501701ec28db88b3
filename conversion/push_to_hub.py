#!/usr/bin/env python
# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Publish a LLaVA-VR folder (converted or fine-tuned) to the Hugging Face Hub.

    python conversion/push_to_hub.py FOLDER --repo-id OWNER/NAME [--base-model OWNER/NAME] [--private] [--dry-run]
        [--commit-message MSG]                                                  (= `llava-vr push`)

The implementation is in `llava_vr.hub.push` (see conversion/README.md).
"""

from llava_vr.hub.push import main

if __name__ == "__main__":
    raise SystemExit(main())
