"""A deterministic sales and marketing dataset for MongoDB: the demo, the benchmarks and the tests use it.

    generator = SalesMarketingGenerator(GeneratorConfig(seed=42, scale=0.5))
    writer = MongoWriter(pymongo.MongoClient(uri)["shop"])
    writer.load(generator, progress=print)                 # the initial dataset
    writer.run(generator, rate_per_second=20, limit=5000)  # then a drifting change stream
    generator.document_counts() == writer.counts()         # the source's truth

Without MongoDB, ``ChangeEventEncoder`` turns the same operations into MongoDB change
events and ``BronzeFixtureWriter`` lands them as bronze Delta tables.
"""

from data_generator.bronze import BronzeFixtureWriter
from data_generator.change_events import ChangeEventEncoder
from data_generator.config import COLLECTIONS, DRIFT_STEPS, GeneratorConfig
from data_generator.generator import SalesMarketingGenerator
from data_generator.mongo import MongoWriter
from data_generator.operations import Delete, Insert, Operation, Replace, Update

__all__ = [
    "COLLECTIONS",
    "DRIFT_STEPS",
    "BronzeFixtureWriter",
    "ChangeEventEncoder",
    "Delete",
    "GeneratorConfig",
    "Insert",
    "MongoWriter",
    "Operation",
    "Replace",
    "SalesMarketingGenerator",
    "Update",
]
