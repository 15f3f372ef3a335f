"""The seed's PySpark script with only its paths and column names changed (TPC-H `orders`:
`o_custkey`, `o_totalprice`), timed on one engine:

    seed_bench.py remote INPUT OUTPUT     the endpoint of SPARK_REMOTE (Tarn's)
    seed_bench.py sail INPUT OUTPUT       Sail (pysail) in this process
    seed_bench.py classic INPUT OUTPUT    classic PySpark, local[2]

Prints `seconds N`: from the read to the written output, the session made before.
"""
import sys
import time

engine, source, target = sys.argv[1:4]
from pyspark.sql import SparkSession  # noqa: E402

if engine == "sail":
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer()
    server.start()
    _, port = server.listening_address
    builder = SparkSession.builder.remote(f"sc://localhost:{port}")
elif engine == "classic":
    builder = SparkSession.builder.master("local[2]").config("spark.driver.memory", "8g")
else:
    assert engine == "remote", __doc__
    builder = SparkSession.builder

spark = builder.appName("CustomerAnalytics").getOrCreate()
start = time.monotonic()

# The seed's script from here on.
df = spark.read.parquet(source)

results = df.groupBy("o_custkey") \
    .agg({"o_totalprice": "sum"}) \
    .orderBy("sum(o_totalprice)", ascending=False)

results.write.parquet(target)
print(f"seconds {time.monotonic() - start:.3f}")
