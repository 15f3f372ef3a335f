"""A join that runs for seconds through Tarn's Spark Connect endpoint, for a test that
SIGKILLs a worker while it runs (tests/tests/connect.rs).

    lose_worker.py BASE     BASE: a URL prefix holding lineitem/ (TPC-H)

Prints "scans done" (flushed) once the progress shows two stages done, the join still
running: the test kills a worker then. At the end prints the rows, one per line as
`suppkey,pairs`.
"""
import sys

from pyspark.sql import SparkSession, functions as F

spark = SparkSession.builder.appName("lose-worker").getOrCreate()
told = False


def on_progress(stages, inflight_tasks, operation_id, done):
    global told
    if not told and sum(1 for s in stages if s.done) >= 2 and not done:
        told = True
        print("scans done", flush=True)


spark.registerProgressHandler(on_progress)
l1 = spark.read.parquet(f"{sys.argv[1]}/lineitem/").select("l_partkey", "l_suppkey")
l2 = spark.read.parquet(f"{sys.argv[1]}/lineitem/").select(F.col("l_partkey").alias("pk"))
pairs = (
    l1.join(l2, l1.l_partkey == l2.pk)
    .groupBy("l_suppkey")
    .agg(F.count("*").alias("pairs"))
    .orderBy(F.desc("pairs"), "l_suppkey")
    .limit(20)
)
for r in pairs.collect():
    print(f"{r.l_suppkey},{r.pairs}")
