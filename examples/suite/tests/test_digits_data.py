"""A small suite to run as a test job:

corral submit --kind test --workdir examples/suite -- tests/
"""

from sklearn.datasets import load_digits


def test_the_data_set_has_every_digit():
    _, y = load_digits(return_X_y=True)
    assert sorted(set(y)) == list(range(10))


def test_pixels_are_within_0_and_16():
    x, _ = load_digits(return_X_y=True)
    assert x.min() >= 0 and x.max() <= 16
