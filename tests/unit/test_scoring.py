"""Prefix scoring without a model: which positions are read, and the ValueFn fallback."""

from evomath.scoring import _reads, ppm_text, prefix_scores


def test_ppm_text_drops_trailing_whitespace_so_prefixes_start_the_chain():
    short, long = ppm_text(" Q? ", "Step one.\n\n"), ppm_text("Q?", "Step one.\n\nStep two.\n\n")
    assert short == "Q?\n\nStep one." and long == "Q?\n\nStep one.\n\nStep two."
    assert long.startswith(short)


def test_prefixes_whose_ids_start_the_chain_are_read_from_it_and_others_alone():
    full = [1, 2, 3, 4, 5, 6]
    reads = _reads([[1, 2], [1, 2, 9], full])
    assert reads == [(full, 1), ([1, 2, 9], 2), (full, 5)]


def test_any_value_fn_scores_each_prefix_in_one_call():
    calls = []

    def value_fn(items):
        calls.append(items)
        return [len(steps) / 10 for _, steps in items]

    scores = prefix_scores(value_fn, [("q1", ["a", "b", "c"]), ("q2", ["d"]), ("q3", [])])
    assert scores == [[0.1, 0.2, 0.3], [0.1], []]
    assert len(calls) == 1 and calls[0][:2] == [("q1", ["a"]), ("q1", ["a", "b"])]
