"""A deterministic sales and marketing dataset for MongoDB: the demo, the benchmarks and the tests use it."""
