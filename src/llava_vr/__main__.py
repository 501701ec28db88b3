"""`python -m llava_vr ...` = the `llava-vr` command."""

from .cli import main


raise SystemExit(main())
