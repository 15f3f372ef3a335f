"""A session across a restart of Tarn's Spark Connect endpoint (tests/tests/connect.rs).

Makes session state (a setting, a current database, two temp views, one over the other),
prints "phase 1 done" and waits for a line on stdin (the test restarts the endpoint
meanwhile); then prints "sending", and checks that the same session goes on: its
server-side id, setting, database and views, and the views' rows. Prints "ok" at the end.
"""
import sys

from pyspark.sql import SparkSession, functions as F

from checking import check

spark = SparkSession.builder.appName("restart").getOrCreate()
spark.conf.set("spark.sql.shuffle.partitions", "7")
spark.sql("CREATE DATABASE IF NOT EXISTS keep")
spark.sql("USE keep")
spark.read.parquet("s3://my-bucket/customer-data/").filter(F.col("customer_id") < 10).createOrReplaceTempView("few")
spark.sql("CREATE TEMP VIEW few_sums AS SELECT customer_id, sum(purchase_amount) AS s FROM few GROUP BY customer_id")
before = sorted(tuple(r) for r in spark.table("few_sums").collect())
server_id = spark._client._server_session_id
check("a server-side session", server_id is not None, True)
print("phase 1 done", flush=True)
sys.stdin.readline()
print("sending", flush=True)
# Sent while the endpoint may still be down: the client retries until it answers.
after = sorted(tuple(r) for r in spark.table("few_sums").collect())
check("the temp views after the restart", after, before)
check("the setting", spark.conf.get("spark.sql.shuffle.partitions"), "7")
check("the current database", spark.catalog.currentDatabase(), "keep")
check("the same server-side session", spark._client._server_session_id, server_id)
spark.sql("USE default")
spark.sql("DROP DATABASE keep")
spark.stop()
print("ok")
