# Using PySpark on EMR
from pyspark.sql import SparkSession

# Initialize Spark
spark = SparkSession.builder \
    .appName("CustomerAnalytics") \
    .getOrCreate()

# Read data from S3
df = spark.read.parquet("s3://my-bucket/customer-data/")

# Process data
results = df.groupBy("customer_id") \
    .agg({"purchase_amount": "sum"}) \
    .orderBy("sum(purchase_amount)", ascending=False)

# Save results back to S3
results.write.parquet("s3://my-bucket/processed-data/")
