"""Which test databases a crashed or interrupted run left behind: only ours (by name), only
older than this session's template, only unused, and only when no running session can own
them."""

from __future__ import annotations

from pg_leftovers import stale

MINE = "refloop_tmpl_100"
ALIVE = {100, 200}


def alive(pid: int) -> bool:
    return pid in ALIVE


def test_only_databases_no_running_session_can_use_are_stale() -> None:
    found = [
        ("t_aaaaaaaaaaaa", 10, False),         # older than every live template: stale
        ("t_bbbbbbbbbbbb", 11, True),          # someone is connected: kept
        ("refloop_tmpl_300", 12, False),       # its pytest process is gone: stale
        ("refloop_tmpl_301", 13, True),        # gone, but in use: kept
        ("refloop_tmpl_200", 20, False),       # another live session's template: kept
        ("t_cccccccccccc", 21, False),         # newer than that session's template: kept
        ("refloop_tmpl_400x", 5, False),       # not a name of ours: kept
        ("t_dddd", 6, False),                  # nor this
        ("bench_store", 7, False),             # nor this
        (MINE, 30, False),
        ("refloop_tmpl_500", 31, False),       # gone, but newer than this session: kept
        ("t_eeeeeeeeeeee", 32, False),         # newer than this session: kept
    ]
    assert stale(found, MINE, alive) == ["t_aaaaaaaaaaaa", "refloop_tmpl_300"]


def test_nothing_is_stale_before_the_session_has_its_template() -> None:
    assert stale([("t_aaaaaaaaaaaa", 10, False), ("refloop_tmpl_300", 12, False)], MINE,
                 alive) == []
