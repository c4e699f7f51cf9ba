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
