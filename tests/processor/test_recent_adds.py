"""SADDs the commit may skip: made lately by this process, or earlier in the batch."""

from __future__ import annotations

from processor.stream import RecentAdds

ADD = ["call", "SADD", "ocpp:cp:X:connectors", "1"]
OTHER = ["call", "HSET", "ocpp:cp:X", "last_seen", "t"]


def test_a_member_is_added_once_a_batch_and_once_a_while() -> None:
    memo = RecentAdds(ttl_s=60)
    batch: set[tuple[str, str]] = set()
    assert memo.fresh([ADD, OTHER], 0.0, batch) == [ADD, OTHER]
    assert memo.fresh([ADD, OTHER], 0.0, batch) == [OTHER]  # the same batch
    memo.committed(batch, 0.0)
    assert memo.fresh([ADD], 59.0, set()) == []
    # Past the while, added again: a Redis that lost it gets it back.
    assert memo.fresh([ADD], 61.0, set()) == [ADD]


def test_a_batch_that_never_committed_is_not_remembered() -> None:
    memo = RecentAdds()
    memo.fresh([ADD], 0.0, set())  # the commit raised: committed() never ran
    assert memo.fresh([ADD], 1.0, set()) == [ADD]


def test_the_memo_stays_bounded() -> None:
    memo = RecentAdds(max_size=2)
    for n in range(5):
        batch: set[tuple[str, str]] = set()
        memo.fresh([["call", "SADD", "k", str(n)]], 0.0, batch)
        memo.committed(batch, 0.0)
    assert len(memo._until) <= 2
