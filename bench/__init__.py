"""`make bench`: latency, throughput and capacity benchmarks of the product (see run.py)."""
