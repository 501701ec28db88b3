"""`python -m llava_vr ...` = the `llava-vr` command (`llava_vr_cli`, beside the package)."""

from llava_vr_cli import main

raise SystemExit(main())
