# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Experiments (not remote code). `visual_forgetting`: does Vision Remember win back what token compression loses?
(`llava-vr experiment`)."""
