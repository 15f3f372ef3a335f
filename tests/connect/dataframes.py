"""DataFrame and SQL operations through Tarn's Spark Connect endpoint (pyspark-client),
checked against pandas over the same parquet files (argv[1], a local directory).

Run by tests/tests/connect.rs with SPARK_REMOTE and GRPC_DEFAULT_SSL_ROOTS_FILE_PATH set;
prints "ok" at the end, or fails with the first check that did not hold.
"""
import contextlib
import io
import sys

import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import SparkSession, functions as F

from checking import check, fails

spark = SparkSession.builder.appName("checks").getOrCreate()
local = pq.read_table(sys.argv[1]).to_pandas()
df = spark.read.parquet("s3://my-bucket/customer-data/")


check("spark.version", spark.version, "4.2.0")
check("columns", df.columns, ["customer_id", "purchase_amount"])
check("count", df.count(), len(local))

rows = (
    df.filter(F.col("customer_id") < 10)
    .select("customer_id", (F.col("purchase_amount") * 2).alias("twice"))
    .orderBy("customer_id", "twice")
    .collect()
)
want = local[local.customer_id < 10].assign(twice=lambda d: d.purchase_amount * 2).sort_values(["customer_id", "twice"])
check("filter, select, orderBy", [(r.customer_id, r.twice) for r in rows], list(zip(want.customer_id, want.twice)))

agg = df.groupBy("customer_id").agg(F.sum("purchase_amount"), F.count("*"), F.max("purchase_amount")).orderBy("customer_id")
check("Spark's names", agg.columns, ["customer_id", "sum(purchase_amount)", "count(1)", "max(purchase_amount)"])
pdf = agg.toPandas()
g = local.groupby("customer_id").purchase_amount
check("toPandas sums", list(pdf["sum(purchase_amount)"]), list(g.sum().sort_index()))
check("toPandas counts", list(pdf["count(1)"]), list(g.count().sort_index()))

check("case-insensitive columns, named as spelled", df.select("CUSTOMER_ID").columns, ["CUSTOMER_ID"])

out = io.StringIO()
with contextlib.redirect_stdout(out):
    df.orderBy("customer_id", "purchase_amount").show(2)
first = local.sort_values(["customer_id", "purchase_amount"]).head(2)
lines = out.getvalue().rstrip("\n").splitlines()
check("show: header", lines[:3], ["+-----------+---------------+", "|customer_id|purchase_amount|", "+-----------+---------------+"])
check("show: first row", lines[3], f"|{first.customer_id.iloc[0]:>11}|{first.purchase_amount.iloc[0]:>15}|")
check("show: footer", lines[-1], "only showing top 2 rows")

df.createOrReplaceTempView("tx")
top = spark.sql(
    "SELECT customer_id, sum(purchase_amount) AS total FROM tx GROUP BY customer_id ORDER BY total DESC, customer_id LIMIT 3"
).collect()
totals = g.sum().reset_index().sort_values(["purchase_amount", "customer_id"], ascending=[False, True]).head(3)
check("spark.sql over a temp view", [(r.customer_id, r.total) for r in top], list(zip(totals.customer_id, totals.purchase_amount)))

check("spark.range", [r.id for r in spark.range(2, 7, 2).collect()], [2, 4, 6])

fails("a missing column", "UNRESOLVED_COLUMN.WITH_SUGGESTION", lambda: df.select("nope").collect())
fails("a missing path", "PATH_NOT_FOUND", lambda: spark.read.parquet("s3://my-bucket/missing/").collect())

small = df.filter(F.col("customer_id") == 7)
small.write.parquet("s3://my-bucket/checks/seven/")
fails("writing onto an existing path", "PATH_ALREADY_EXISTS", lambda: small.write.parquet("s3://my-bucket/checks/seven/"))
df.filter(F.col("customer_id") == 8).write.mode("overwrite").parquet("s3://my-bucket/checks/seven/")
back = spark.read.parquet("s3://my-bucket/checks/seven/").select("customer_id").distinct().collect()
check("overwrite replaced the output", [r.customer_id for r in back], [8])
df.write.mode("ignore").parquet("s3://my-bucket/checks/seven/")
check("ignore left it", spark.read.parquet("s3://my-bucket/checks/seven/").count(), int((local.customer_id == 8).sum()))

# Literals, division and emptiness as Spark has them.
from decimal import Decimal

check("a decimal literal keeps its digits", df.filter(F.col("purchase_amount") > F.lit(Decimal("99000.50"))).count(),
      int((local.purchase_amount > 99000.5).sum()))
halves = df.filter(F.col("customer_id") == 7).select((F.col("customer_id") / 2).alias("h")).limit(1).collect()
check("/ divides in double", halves[0].h, 3.5)
check("by zero is NULL", df.select((F.col("customer_id") / 0).alias("z")).limit(1).collect()[0].z, None)
check("no rows", df.filter(F.col("customer_id") < 0).collect(), [])
check("no rows as pandas", len(df.filter(F.col("customer_id") < 0).toPandas()), 0)

# What Tarn does not compute as Spark does is refused, naming it.
fails("a function whose meaning differs", "UNRESOLVED_ROUTINE", lambda: df.select(F.initcap("customer_id")).collect())
check("/ in SQL divides in double too", spark.sql("SELECT customer_id / 2 AS h FROM tx WHERE customer_id = 7 LIMIT 1").collect()[0].h, 3.5)
fails("a function Spark SQL lacks", "UNRESOLVED_ROUTINE", lambda: spark.sql("SELECT no_such_function(customer_id) FROM tx").collect())
fails("a column neither grouped nor aggregated", "MISSING_AGGREGATION",
      lambda: spark.sql("SELECT customer_id, purchase_amount FROM tx GROUP BY customer_id").collect())
check("a subquery inside WHERE (left to DataFusion's SQL planner)",
      spark.sql("SELECT count(*) AS n FROM tx WHERE customer_id IN (SELECT customer_id FROM tx WHERE customer_id < 10)").collect()[0].n,
      int((local.customer_id < 10).sum()))
check("a correlated EXISTS and a scalar subquery",
      spark.sql("SELECT count(*) AS n FROM tx a WHERE EXISTS (SELECT 1 FROM tx b WHERE b.customer_id = a.customer_id AND b.purchase_amount > 99000) "
                "AND a.purchase_amount > (SELECT avg(purchase_amount) FROM tx) / 2").collect()[0].n,
      int(local[local.customer_id.isin(local[local.purchase_amount > 99000].customer_id) & (local.purchase_amount > local.purchase_amount.mean() / 2)].shape[0]))
fails("a syntax error", "PARSE_SYNTAX_ERROR", lambda: spark.sql("SELECT customer_id FROM tx WHERE").collect())
fails("a statement in spark.sql", "UNSUPPORTED_FEATURE", lambda: spark.sql("INSERT INTO tx SELECT * FROM tx").collect())
check("a catalog statement's rows", spark.sql("CREATE DATABASE IF NOT EXISTS default").collect(), [])
fails("another time zone", "UNSUPPORTED_FEATURE", lambda: spark.conf.set("spark.sql.session.timeZone", "America/New_York"))
fails("overwriting the input", "UNSUPPORTED_OVERWRITE.PATH", lambda: spark.read.parquet("s3://my-bucket/checks/seven/")
      .write.mode("overwrite").parquet("s3://my-bucket/checks/seven/"))
check("the input is still there", spark.read.parquet("s3://my-bucket/checks/seven/").count(), int((local.customer_id == 8).sum()))

df.createOrReplaceTempView("MyTx")
check("view names ignore case", spark.sql("SELECT count(*) AS n FROM mytx").collect()[0].n, len(local))
check("spark.table", spark.table("MyTx").count(), len(local))

# Joins, unions and local data.
names = spark.createDataFrame([(7, "seven"), (8, "eight"), (9000, "nobody")], ["customer_id", "name"])
check("createDataFrame", sorted(r.name for r in names.collect()), ["eight", "nobody", "seven"])
totals = df.groupBy("customer_id").agg(F.sum("purchase_amount").alias("total"))
j = totals.join(names, "customer_id").orderBy("customer_id")
check("join on a name: columns", j.columns, ["customer_id", "total", "name"])
check("join on a name: rows", [(r.customer_id, r.total, r.name) for r in j.collect()],
      [(c, int(g.sum()[c]), n) for c, n in [(7, "seven"), (8, "eight")]])
left = names.join(totals, names["customer_id"] == totals["customer_id"], "left").orderBy(names["customer_id"])
check("left join on an expression", [(r[0], r.name, r.total) for r in left.collect()],
      [(7, "seven", int(g.sum()[7])), (8, "eight", int(g.sum()[8])), (9000, "nobody", None)])
check("left anti", [r.name for r in names.join(totals, "customer_id", "left_anti").collect()], ["nobody"])
full = names.join(totals.filter(F.col("customer_id") < 3), "customer_id", "full").orderBy("customer_id")
check("full outer keeps a key from either side", [r.customer_id for r in full.collect()], sorted(set(range(3)) & set(local.customer_id)) + [7, 8, 9000])
u = names.select("customer_id").union(names.select("customer_id")).union(spark.createDataFrame([(1,)], ["x"]))
check("union keeps duplicates", sorted(r.customer_id for r in u.collect()), sorted([1, 7, 7, 8, 8, 9000, 9000]))
ubn = names.select("name", "customer_id").unionByName(names.select("customer_id", "name"))
check("unionByName", ubn.columns, ["name", "customer_id"])
check("unionByName rows", sorted(r.customer_id for r in ubn.collect()), [7, 7, 8, 8, 9000, 9000])
check("intersect", sorted(r.customer_id for r in names.select("customer_id").intersect(totals.select("customer_id")).collect()), [7, 8])
check("subtract", [r.customer_id for r in names.select("customer_id").subtract(totals.select("customer_id")).collect()], [9000])
fails("union of different widths", "NUM_COLUMNS_MISMATCH", lambda: names.union(totals.select("customer_id")).collect())

# Progress arrives as Spark's ExecutionProgress: the job's stages, their tasks, the bytes
# their scans read.
seen = []


def on_progress(stages, inflight_tasks, operation_id, done):
    seen.append(list(stages or []))


spark.registerProgressHandler(on_progress)
df.groupBy("customer_id").count().orderBy("customer_id").collect()
spark.clearProgressHandlers()
last = seen[-1] if seen else []
check("progress: several stages", len(last) > 1, True)
check("progress: every stage done at the end", all(s.done and s.num_completed_tasks == s.num_tasks > 0 for s in last), True)
check("progress: the scan's bytes", sum(s.num_bytes_read for s in last) > 0, True)

fails("tail of unordered rows", "UNSUPPORTED_FEATURE", lambda: df.tail(2))
from decimal import ROUND_HALF_UP
thirds = df.filter(F.col("customer_id") < 20).select("purchase_amount", F.round(F.col("purchase_amount") / 3, 2).alias("r")).collect()
check("round of a double: half up on its decimal text, as Spark", [r.r for r in thirds],
      [float(Decimal(repr(r.purchase_amount / 3)).quantize(Decimal("0.01"), ROUND_HALF_UP)) for r in thirds])
# (PySpark's sample(0.3, seed=7) drops the keyword seed: fraction= makes it count.)
some = df.sample(fraction=0.3, seed=7)
kept = some.count()
check("sample keeps about its fraction", abs(kept - 0.3 * len(local)) < 0.1 * len(local), True)
check("the same seed, the same rows", sorted(map(tuple, some.collect())) == sorted(map(tuple, df.sample(fraction=0.3, seed=7).collect())), True)
check("another seed, other rows", sorted(map(tuple, some.collect())) == sorted(map(tuple, df.sample(fraction=0.3, seed=8).collect())), False)
halves = df.randomSplit([0.5, 0.5], seed=3)
check("randomSplit's parts hold every row once", halves[0].count() + halves[1].count(), len(local))
fails("sample with replacement", "UNSUPPORTED_FEATURE", lambda: df.sample(True, 0.5, seed=1).collect())
check("round(2.675, 2) is 2.68", spark.sql("SELECT round(CAST(2.675 AS DOUBLE), 2) AS r").collect()[0].r, 2.68)
fails("a Spark function Tarn lacks", "UNRESOLVED_ROUTINE", lambda: df.select(F.soundex(F.lit("x"))).collect())

# interruptAll() while a query runs: the client gets OPERATION_CANCELED at once (and the
# job is cancelled in the session application: its client left).
import threading  # noqa: E402

# 12,000 rows times 12,000: seconds of work. (A task already running finishes: Ballista
# executors in pull mode take no cancel; the job's other tasks and stages do not run.)
other = df.withColumnRenamed("customer_id", "c2").withColumnRenamed("purchase_amount", "p2")
slow = df.crossJoin(other).groupBy("customer_id").agg(F.sum("p2"))
running = threading.Event()
spark.registerProgressHandler(lambda stages, **rest: running.set() if any(s.num_tasks for s in stages or []) else None)
errors = []


def run_slow():
    try:
        slow.collect()
    except Exception as e:  # noqa: BLE001 - checked below
        errors.append(e)


t = threading.Thread(target=run_slow)
t.start()
check("the slow query started", running.wait(120), True)
spark.interruptAll()
t.join(60)
spark.clearProgressHandlers()
check("interrupted", (t.is_alive(), len(errors)), (False, 1))
check("interrupted: the error", "OPERATION_CANCELED" in str(errors[0]), True)
check("a query after the interrupt", df.filter(F.col("customer_id") == 7).count(), int((local.customer_id == 7).sum()))

spark.stop()
print("ok")
