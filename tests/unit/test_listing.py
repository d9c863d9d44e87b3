"""Listing pages cut by stored size as well as by count (server/tunewire_server/listing.py)."""

from tunewire_server.jobs.listing import JOB_OVERHEAD, cut_page, page_budget


def test_a_page_stops_before_its_size_passes_the_budget():
    budget = 10 * (100 + JOB_OVERHEAD)
    assert cut_page([100] * 30, 20, budget) == (10, True)
    assert cut_page([100] * 5, 20, budget) == (5, False)


def test_a_page_is_cut_by_count_too_and_says_more_follow():
    assert cut_page([1] * 21, 20, 10**9) == (20, True)
    assert cut_page([1] * 20, 20, 10**9) == (20, False)


def test_a_page_holds_at_least_one_job_however_large():
    assert cut_page([10**9, 1], 20, 1000) == (1, True)
    assert cut_page([10**9], 20, 1000) == (1, False)
    assert cut_page([], 20, 1000) == (0, False)


def test_the_budget_leaves_room_for_the_binary_encoding():
    assert page_budget(64 * 1024**2) * 5.5 < 64 * 1024**2
