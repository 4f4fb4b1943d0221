"""A bad APP: importing this module raises."""

raise RuntimeError("this module refuses to be imported")
