# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""The visual-forgetting experiment (does Vision Remember win back what token compression loses?): the
`llava-vr experiment` command as a script. Protocol and options: `--help`; implementation:
`llava_vr.experiments.visual_forgetting`.

    python examples/visual_forgetting/run_experiment.py --seeds 0 1 --jobs 2              # default CPU preset
    python examples/visual_forgetting/run_experiment.py --summarize-only --save-best-to DIR   # table + best model
"""

from llava_vr.experiments.visual_forgetting import main

if __name__ == "__main__":
    raise SystemExit(main())
