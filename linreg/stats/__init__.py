"""The statistics of a fit as plain tensor code, no Lightning: least squares, the report, the figures."""
