"""A user's validator package, as a third party would write one (used by
tests/validators/test_custom_validators.py). Loaded by dotted path, e.g.
`tests.support.custom_validator_pkg.shouting.NoShouting`, or through a `foldem.validators` entry
point."""
