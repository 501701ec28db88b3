#!/usr/bin/env python
# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Convert a LLaVA-NeXT / LLaVA-OneVision checkpoint (Qwen2 LLM) into a LLaVA-VR `trust_remote_code` folder.

    python conversion/convert_to_llava_vr.py --source SRC --output DIR [options]   (= `llava-vr convert`)

The same door as `llava-vr convert` (`llava_vr_cli`, so `--help` answers without importing torch); the implementation
and the options are in `llava_vr.conversion` (see conversion/README.md). `modeling_tests/test_conversion.py` runs
this script.
"""

import sys

from llava_vr_cli import main

if __name__ == "__main__":
    raise SystemExit(main(["convert", *sys.argv[1:]]))
