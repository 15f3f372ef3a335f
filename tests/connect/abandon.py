"""Starts a slow query through SPARK_REMOTE and, once its tasks run, kills itself with
SIGKILL: a client gone without a word (no interrupt, no release)."""
import os
import signal

from pyspark.sql import SparkSession, functions as F

spark = SparkSession.builder.getOrCreate()
df = spark.read.parquet("s3://my-bucket/customer-data/")
# 12,000 rows times 12,000: seconds of work. (A task already running finishes: Ballista
# executors in pull mode take no cancel; the job's other tasks and stages do not run.)
other = df.withColumnRenamed("customer_id", "c2").withColumnRenamed("purchase_amount", "p2")
slow = df.crossJoin(other).groupBy("customer_id").agg(F.sum("p2"))


def on_progress(stages, **rest):
    if any(s.num_tasks for s in stages or []):
        os.kill(os.getpid(), signal.SIGKILL)


spark.registerProgressHandler(on_progress)
slow.collect()
print("the query finished before its client could leave")
