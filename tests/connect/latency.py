"""Submit-to-result latency of a trivial query through Tarn's Spark Connect endpoint
(SPARK_REMOTE and GRPC_DEFAULT_SSL_ROOTS_FILE_PATH as `tarn up` prints them): the first
query (which starts the user's session application) and 15 more on the warm session.
"""
import time
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
t = time.time(); spark.range(1).collect(); first = time.time() - t
xs = []
for _ in range(15):
    t = time.time(); spark.range(1).collect(); xs.append(time.time() - t)
xs.sort()
print(f"first (session start): {first:.2f} s; warm: min {xs[0]*1000:.0f} ms, median {xs[7]*1000:.0f} ms, max {xs[-1]*1000:.0f} ms")
t = time.time(); spark.range(1000).toPandas(); print(f"toPandas(range 1000): {(time.time()-t)*1000:.0f} ms")
