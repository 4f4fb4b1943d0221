"""A package, for Twisted's dotted APP form (``pkg.sub.application``)."""
