"""`llava-vr sft --help` without torch: the parser rebuilt from `sft_help.json` formats the real parser's help, and
is not used where the installed releases or the option sources differ from what the file was written with."""

import json

import pytest

from llava_vr.training import sft_help

pytest.importorskip("trl")


def test_the_stored_sft_help_is_current_for_these_releases():
    stored = json.loads(sft_help.STORED.read_text())
    key = sft_help.current_key()
    if stored["key"]["releases"] != key["releases"]:
        pytest.skip(f"sft_help.json is for {stored['key']['releases']}, installed: {key['releases']}")
    assert stored["key"]["sources_sha256"] == key["sources_sha256"], (
        "the sft options changed: rewrite the stored help with `python -m llava_vr.training.sft_help --write`"
    )


@pytest.mark.parametrize("columns", [60, 80, 160])
def test_the_rebuilt_parser_prints_the_real_parsers_help_at_any_width(columns, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    rebuilt = sft_help.build_parser()
    if rebuilt is None:
        pytest.skip("sft_help.json does not fit the installed releases (see the test above)")
    live = sft_help.live_parser()
    assert rebuilt.format_help() == live.format_help()
    assert rebuilt.format_usage() == live.format_usage()


def test_the_rebuilt_parser_is_made_from_what_describe_reads_of_any_parser():
    live = sft_help.live_parser()
    assert sft_help.parser_from_description(sft_help.describe(live), live.prog).format_help() == live.format_help()


def test_no_stored_help_where_releases_or_sources_differ(monkeypatch):
    key = sft_help.current_key()
    other_release = {**key, "releases": {**key["releases"], "trl": "0.0.1"}}
    other_sources = {**key, "sources_sha256": "0" * 64}
    for changed in (other_release, other_sources):
        monkeypatch.setattr(sft_help, "current_key", lambda changed=changed: changed)
        assert sft_help.build_parser() is None
