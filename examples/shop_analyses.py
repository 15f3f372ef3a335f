# The shop's analyses (what `tarn demo` runs after the seed's script): cart abandonment
# by day and category, customer lifetime value, and "bought X, also bought Y". Plain
# PySpark: run it yourself with the SPARK_REMOTE and GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
# lines `tarn up` prints, over the data `tarn demo` put in s3://my-bucket/.
import json
import sys
import time

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

spark = SparkSession.builder.appName("ShopAnalyses").getOrCreate()
base = sys.argv[1] if len(sys.argv) > 1 else "s3://my-bucket"
out = f"{base}/demo/pyspark"

events = spark.read.parquet(f"{base}/events/")
purchases = spark.read.parquet(f"{base}/customer-data/")
products = spark.read.parquet(f"{base}/products/")
customers = spark.read.parquet(f"{base}/customers/")


def save(name, df):
    start = time.time()
    path = f"{out}/{name}/"
    df.write.mode("overwrite").parquet(path)
    print(json.dumps({"analysis": name, "seconds": round(time.time() - start, 2), "path": path}), flush=True)


# Cart abandonment by day and category: a cart is a session that put a product of the
# category in its cart that day; it is abandoned when the session never checked out.
carts = (
    events.filter(F.col("event_type") == "add_to_cart")
    .join(products.select("product_id", "category"), "product_id")
    .select("session_id", "event_date", "category")
    .distinct()
)
checkouts = (
    events.filter(F.col("event_type") == "checkout").select("session_id").distinct().withColumn("checked_out", F.lit(1))
)
abandonment = (
    carts.join(checkouts, "session_id", "left")
    .groupBy("event_date", "category")
    .agg(
        F.count("*").alias("carts"),
        F.sum(F.when(F.col("checked_out").isNull(), 1).otherwise(0)).alias("abandoned"),
    )
    .withColumn("abandonment_rate", F.col("abandoned") / F.col("carts"))
    .orderBy("event_date", "category")
)
save("cart_abandonment", abandonment)

# Customer lifetime value: what each customer spent, in how many orders, since when.
clv = (
    purchases.groupBy("customer_id")
    .agg(
        F.sum("purchase_amount").alias("lifetime_value"),
        F.countDistinct("order_id").alias("orders"),
        F.min("purchase_date").alias("first_purchase"),
        F.max("purchase_date").alias("last_purchase"),
    )
    .withColumn("avg_order_value", F.col("lifetime_value") / F.col("orders"))
    .join(customers.select("customer_id", "name", "country", "segment"), "customer_id")
    .orderBy(F.col("lifetime_value").desc(), "customer_id")
)
save("customer_lifetime_value", clv)

# Bought X, also bought Y: products in the same orders; for each product the three bought
# with it by the most customers.
a = purchases.select("order_id", "customer_id", "product_id")
b = purchases.select("order_id", F.col("product_id").alias("also_bought_id"))
pairs = (
    a.join(b, "order_id")
    .filter(F.col("product_id") != F.col("also_bought_id"))
    .groupBy("product_id", "also_bought_id")
    .agg(F.countDistinct("customer_id").alias("customers"))
)
best = Window.partitionBy("product_id").orderBy(F.col("customers").desc(), "also_bought_id")
also = (
    pairs.withColumn("recommendation_rank", F.row_number().over(best))
    .filter(F.col("recommendation_rank") <= 3)
    .orderBy("product_id", "recommendation_rank")
)
save("also_bought", also)
