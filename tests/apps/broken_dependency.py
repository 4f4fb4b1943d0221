"""A bad APP: the module exists but imports one that does not."""

import ferrocorn_tests_no_such_dependency  # noqa: F401

app = None
