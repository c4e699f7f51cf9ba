import numpy as np

from uqkd._seeding import STUDENT_BLOCK, key_to_int, make_rng, student_normals


def test_student_draws_do_not_depend_on_companions():
    ident = ("exp", "cell")
    all_ = student_normals(0, ident, np.arange(3 * STUDENT_BLOCK + 5), (4,))
    some = student_normals(0, ident, [7, 130, 2], (4,))
    np.testing.assert_array_equal(some, all_[[7, 130, 2]])
    alone = student_normals(0, ident, [130], (4,))
    np.testing.assert_array_equal(alone[0], all_[130])


def test_identity_and_seed_change_the_stream():
    a = make_rng(0, "x", 1).random(3)
    assert np.array_equal(a, make_rng(0, "x", 1).random(3))
    assert not np.array_equal(a, make_rng(0, "x", 2).random(3))
    assert not np.array_equal(a, make_rng(1, "x", 1).random(3))
    assert key_to_int("alpha=0.1") == key_to_int("alpha=0.1") != key_to_int("alpha=0.2")


def test_student_fill_equals_student_draws_in_place_or_scattered():
    from uqkd._seeding import student_draws, student_fill

    ident = ("exp", "fill")
    n = 7

    def draw(g, b):
        return np.stack([g.standard_normal((b, n)), g.chisquare(3, (b, n))], axis=1)  # (b, 2, n)

    def fill(g, views):
        g.standard_normal(out=views[0])
        g.standard_gamma(1.5, out=views[1])
        views[1] *= 2.0

    for ids in (np.arange(3 * STUDENT_BLOCK + 5), np.array([130, 7, 2, 9]), np.arange(STUDENT_BLOCK, 2 * STUDENT_BLOCK)):
        ref = student_draws(0, ident, ids, draw)
        z, c = np.empty((len(ids), n)), np.empty((len(ids), n))
        student_fill(0, ident, ids, [z, c], fill)
        np.testing.assert_array_equal(z, ref[:, 0])
        np.testing.assert_array_equal(c, ref[:, 1])
