"""eical benchmarks (``make bench``): printed tables of speed and calibration quality, not pass/fail tests."""
