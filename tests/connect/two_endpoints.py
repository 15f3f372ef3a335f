"""One session through two endpoints (tests/tests/connect.rs): SPARK_REMOTE names a
`session_id`, so the second run continues the first's session on another endpoint.

    two_endpoints.py make        a setting and a temp view; the session is not released
    two_endpoints.py continue    the same setting and view, through the other endpoint

Prints "ok" at the end.
"""
import sys

from pyspark.sql import SparkSession, functions as F

from checking import check

spark = SparkSession.builder.appName("two-endpoints").getOrCreate()
if sys.argv[1] == "make":
    spark.conf.set("spark.sql.shuffle.partitions", "5")
    df = spark.read.parquet("s3://my-bucket/customer-data/")
    df.filter(F.col("customer_id") < 20).createOrReplaceTempView("few")
    print(spark.table("few").count())
    # Not stopped: a stopped session is released, and its record with it.
else:
    check("the setting", spark.conf.get("spark.sql.shuffle.partitions"), "5")
    print(spark.table("few").count())
    spark.stop()
print("ok")
