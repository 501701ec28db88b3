#!/usr/bin/env python
# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Convert a LLaVA-NeXT / LLaVA-OneVision checkpoint (Qwen2 LLM) into a LLaVA-VR `trust_remote_code` folder.

    python conversion/convert_to_llava_vr.py --source SRC --output DIR [options]   (= `llava-vr convert`)

The implementation and the options are in `llava_vr.conversion.convert` (see conversion/README.md);
`modeling_tests/test_conversion.py` runs this script.
"""

from llava_vr.conversion.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
