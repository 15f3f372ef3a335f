"""The table catalog through Tarn's Spark Connect endpoint (pyspark-client).

`catalog.py create LOCAL` makes databases and tables (SQL DDL, saveAsTable, CTAS, and
over partitioned files already in s3://lake/events/, whose local copy is LOCAL) and checks
what the catalog answers; `catalog.py check LOCAL` runs in a new session of another
endpoint (after a namenode failover) and finds the same tables, then drops them.

Run by tests/tests/connect.rs with SPARK_REMOTE and GRPC_DEFAULT_SSL_ROOTS_FILE_PATH set;
prints "ok" at the end, or fails with the first check that did not hold.
"""
import sys

import pyarrow.dataset as ds
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession, functions as F

from checking import check, fails

phase, local = sys.argv[1], sys.argv[2]
spark = SparkSession.builder.appName("catalog").getOrCreate()
# The events as pyarrow reads the local copy: day=... directories of parquet files.
events = ds.dataset(local, format="parquet", partitioning="hive").to_table().to_pandas()
per_day = {str(k): int(v) for k, v in events.groupby("day").size().items()}
customers = events.customer_id.nunique()


def job_fails(what, f):
    """`f()` fails when its job runs (not at analysis)."""
    try:
        f()
    except AssertionError:
        raise
    except AnalysisException as e:
        raise AssertionError(f"{what}: refused at analysis, not when it ran: {e}")
    except Exception:
        return
    raise AssertionError(f"{what}: no error")


def rows(sql):
    return [tuple(r) for r in spark.sql(sql).collect()]


def days(df):
    return {str(r[0]): r[1] for r in df.groupBy("day").count().collect()}


if phase == "create":
    check("the current database", spark.catalog.currentDatabase(), "default")
    spark.sql("CREATE DATABASE sales COMMENT 'the shop'")
    spark.sql("CREATE DATABASE IF NOT EXISTS sales")
    fails("a database twice", "SCHEMA_ALREADY_EXISTS", lambda: spark.sql("CREATE DATABASE sales"))
    check("SHOW DATABASES", rows("SHOW DATABASES"), [("default",), ("sales",)])
    check("databaseExists", (spark.catalog.databaseExists("sales"), spark.catalog.databaseExists("nope")), (True, False))

    # A table over files that are there: its columns read from them, its partition
    # column (and its type) from the day=YYYY-MM-DD directories.
    spark.sql("CREATE TABLE sales.events USING parquet LOCATION 's3://lake/events/'")
    check("DESCRIBE", rows("DESCRIBE TABLE sales.events"), [
        ("customer_id", "bigint", None),
        ("purchase_amount", "bigint", None),
        ("day", "date", None),
        ("# Partition Information", "", ""),
        ("# col_name", "data_type", "comment"),
        ("day", "date", None),
    ])
    t = spark.table("sales.events")
    check("the table's columns", t.columns, ["customer_id", "purchase_amount", "day"])
    check("rows per day (partition pruning aside)", days(t), per_day)
    first = sorted(per_day)[0]
    check("a filter on the partition column", spark.table("sales.events").filter(F.col("day") == F.lit(first).cast("date")).count(), per_day[first])
    fails("the same table again", "TABLE_OR_VIEW_ALREADY_EXISTS",
          lambda: spark.sql("CREATE TABLE sales.events USING parquet LOCATION 's3://lake/events/'"))
    spark.sql("CREATE TABLE IF NOT EXISTS sales.events USING parquet LOCATION 's3://lake/events/'")

    # saveAsTable: a managed table (its data under the owner's warehouse).
    totals = t.groupBy("customer_id").agg(F.sum("purchase_amount").alias("total"))
    totals.write.saveAsTable("totals")
    check("a saved table's rows", spark.table("totals").count(), customers)
    check("...and in SQL", rows("SELECT count(*) FROM default.totals"), [(customers,)])
    fails("saveAsTable onto a table", "TABLE_OR_VIEW_ALREADY_EXISTS", lambda: totals.write.saveAsTable("totals"))
    totals.limit(5).write.mode("ignore").saveAsTable("totals")
    check("mode ignore leaves it", spark.table("totals").count(), customers)
    totals.limit(5).write.mode("overwrite").saveAsTable("totals")
    check("mode overwrite replaces it", spark.table("totals").count(), 5)
    fails("overwriting the table read from", "UNSUPPORTED_OVERWRITE.TABLE",
          lambda: spark.table("totals").write.mode("overwrite").saveAsTable("totals"))
    check("...leaves it", spark.table("totals").count(), 5)
    # Appends: by name (saveAsTable), by position (insertInto), types that widen only.
    totals.limit(3).select("total", "customer_id").write.mode("append").saveAsTable("totals")
    check("mode append adds rows", spark.table("totals").count(), 8)
    spark.createDataFrame([(-1, 2)], "a int, b long").write.insertInto("totals")
    check("insertInto adds rows by position", rows("SELECT total FROM totals WHERE customer_id = -1"), [(2,)])
    fails("an append without a column", "INCOMPATIBLE_DATA_FOR_TABLE.CANNOT_FIND_DATA",
          lambda: spark.range(1).write.mode("append").saveAsTable("totals"))
    fails("an insert of a string column", "INCOMPATIBLE_DATA_FOR_TABLE.CANNOT_SAFELY_CAST",
          lambda: spark.createDataFrame([("x", 1)], "a string, b long").write.insertInto("totals"))
    fails("an insert of one column", "INSERT_COLUMN_ARITY_MISMATCH.NOT_ENOUGH_DATA_COLUMNS",
          lambda: spark.range(1).write.insertInto("totals"))
    check("...which add nothing", spark.table("totals").count(), 9)
    # A path takes appends too.
    spark.range(3).write.parquet("s3://lake/ids/")
    spark.range(3, 5).write.mode("append").parquet("s3://lake/ids/")
    check("an appended path", sorted(r.id for r in spark.read.parquet("s3://lake/ids/").collect()), [0, 1, 2, 3, 4])
    # Write options reach the writer in the session: no header line unless asked.
    spark.range(3).write.csv("s3://lake/ids-csv/")
    check("a CSV without a header", spark.read.csv("s3://lake/ids-csv/").count(), 3)
    spark.range(3).write.option("header", "true").option("sep", ";").csv("s3://lake/ids-csv2/")
    check("a CSV with one", spark.read.option("header", "true").option("sep", ";").csv("s3://lake/ids-csv2/").columns, ["id"])
    # An overwrite whose job fails (here: "abc" read as a bigint) leaves the table and the
    # path as they were: the new output replaces the old only once it is complete.
    spark.createDataFrame([("abc", "1")], "a string, b string").write.csv("s3://lake/bad-csv/")
    bad = spark.read.schema("customer_id BIGINT, total BIGINT").csv("s3://lake/bad-csv/")
    job_fails("an overwrite of a table by a failing job", lambda: bad.write.mode("overwrite").saveAsTable("totals"))
    check("...leaves the table", spark.table("totals").count(), 9)
    job_fails("an overwrite of a path by a failing job",
              lambda: bad.select(F.col("customer_id").alias("id")).write.mode("overwrite").parquet("s3://lake/ids/"))
    check("...leaves the path", spark.read.parquet("s3://lake/ids/").count(), 5)
    spark.range(7).write.mode("overwrite").parquet("s3://lake/ids/")
    check("an overwrite of a path", spark.read.parquet("s3://lake/ids/").count(), 7)

    # Partitioned, into another database; the partition column goes last.
    t.select("day", "customer_id", "purchase_amount").write.partitionBy("day").saveAsTable("sales.events_copy")
    copy = spark.table("sales.events_copy")
    check("a partitioned copy's columns", copy.columns, ["customer_id", "purchase_amount", "day"])
    check("a partitioned copy's rows", days(copy), per_day)
    first = sorted(per_day)[0]
    t.filter(F.col("day") == F.lit(first).cast("date")).write.mode("append").saveAsTable("sales.events_copy")
    doubled = dict(per_day, **{first: 2 * per_day[first]})
    check("an append into one partition", days(spark.table("sales.events_copy")), doubled)

    # CREATE TABLE ... AS SELECT, and an empty table of given columns.
    spark.sql("CREATE TABLE sales.big AS SELECT customer_id, sum(purchase_amount) AS total "
              "FROM sales.events GROUP BY customer_id")
    check("CTAS", rows("SELECT count(*) FROM sales.big"), [(customers,)])
    # OR REPLACE keeps the old table until the new one is made.
    bad.createOrReplaceTempView("bad")
    job_fails("CREATE OR REPLACE TABLE ... AS by a failing job",
              lambda: spark.sql("CREATE OR REPLACE TABLE sales.big AS SELECT * FROM bad"))
    spark.catalog.dropTempView("bad")
    check("...leaves the table", rows("SELECT count(*) FROM sales.big"), [(customers,)])
    spark.sql("CREATE OR REPLACE TABLE sales.big AS SELECT customer_id, count(*) AS n FROM sales.events GROUP BY customer_id")
    check("CREATE OR REPLACE TABLE ... AS", (spark.table("sales.big").columns, spark.table("sales.big").count()),
          (["customer_id", "n"], customers))
    # Files already at a managed table's place are not taken over.
    spark.range(2).write.parquet("/user/admin/warehouse/squatter")
    fails("a managed table over files it did not write", "LOCATION_ALREADY_EXISTS",
          lambda: spark.sql("CREATE TABLE squatter USING parquet"))
    spark.sql("CREATE TABLE sales.empty (id BIGINT NOT NULL, price DECIMAL(10, 2), at DATE) USING parquet")
    check("an empty table", spark.table("sales.empty").count(), 0)
    check("its types", [(c.name, c.dataType, c.isPartition) for c in spark.catalog.listColumns("sales.empty")],
          [("id", "bigint", False), ("price", "decimal(10,2)", False), ("at", "date", False)])

    check("SHOW TABLES IN", rows("SHOW TABLES IN sales"), [
        ("sales", "big", False), ("sales", "empty", False), ("sales", "events", False), ("sales", "events_copy", False)])
    check("SHOW TABLES LIKE", rows("SHOW TABLES IN sales LIKE 'events*'"), [
        ("sales", "events", False), ("sales", "events_copy", False)])
    listed = {x.name: (x.tableType, x.namespace, x.isTemporary) for x in spark.catalog.listTables("sales")}
    check("listTables", listed["events"], ("EXTERNAL", ["sales"], False))
    check("listTables (managed)", listed["events_copy"], ("MANAGED", ["sales"], False))
    check("tableExists", (spark.catalog.tableExists("sales.big"), spark.catalog.tableExists("sales.nope")), (True, False))

    # USE: unqualified names are the current database's; temp views come first.
    spark.sql("USE sales")
    check("USE", spark.catalog.currentDatabase(), "sales")
    check("an unqualified name", spark.table("big").count(), customers)
    spark.catalog.setCurrentDatabase("default")
    spark.range(3).createOrReplaceTempView("totals")
    check("a temp view hides a table", spark.table("totals").count(), 3)
    check("SHOW TABLES lists temp views", rows("SHOW TABLES")[-1], ("", "totals", True))
    check("dropTempView", spark.catalog.dropTempView("totals"), True)
    check("the table again", spark.table("totals").count(), 9)
    spark.sql("CREATE OR REPLACE TEMP VIEW top AS SELECT * FROM totals ORDER BY total DESC LIMIT 2")
    check("CREATE TEMP VIEW", spark.table("top").count(), 2)

    fails("a missing table", "TABLE_OR_VIEW_NOT_FOUND", lambda: spark.table("sales.nope").count())
    fails("USE of a missing database", "SCHEMA_NOT_FOUND", lambda: spark.sql("USE nope"))
    fails("a table of a missing database", "SCHEMA_NOT_FOUND",
          lambda: spark.sql("CREATE TABLE nope.t USING parquet LOCATION 's3://lake/events/'"))
    fails("DROP DATABASE of tables", "SCHEMA_NOT_EMPTY", lambda: spark.sql("DROP DATABASE sales"))
    fails("a table over no files", "UNABLE_TO_INFER_SCHEMA",
          lambda: spark.sql("CREATE TABLE t2 USING parquet LOCATION 's3://lake/nothing/'"))
    fails("a table name Tarn cannot keep", "INVALID_CATALOG_REQUEST", lambda: spark.range(1).write.saveAsTable("`a-b`"))
    print("ok")

elif phase == "check":
    # Another endpoint, a new session, a namenode group that lost its leader: the same
    # tables.
    check("SHOW DATABASES", rows("SHOW DATABASES"), [("default",), ("sales",)])
    check("the external table", days(spark.table("sales.events")), per_day)
    first = sorted(per_day)[0]
    check("the partitioned copy", days(spark.table("sales.events_copy")), dict(per_day, **{first: 2 * per_day[first]}))
    check("the managed table", spark.table("totals").count(), 9)
    d = {r[0]: r[1] for r in spark.sql("DESCRIBE EXTENDED sales.events_copy").collect()}
    check("DESCRIBE EXTENDED", (d["Type"], d["Provider"], d["Owner"]), ("MANAGED", "parquet", "admin"))
    location = d["Location"]
    spark.sql("DROP TABLE sales.events_copy")
    fails("a dropped table", "TABLE_OR_VIEW_NOT_FOUND", lambda: spark.table("sales.events_copy").count())
    fails("a dropped managed table's data", "PATH_NOT_FOUND", lambda: spark.read.parquet(location).count())
    spark.sql("DROP TABLE IF EXISTS sales.events_copy")
    spark.sql("DROP TABLE sales.events")
    check("an external table's data stays", spark.read.parquet("s3://lake/events/").count(), len(events))
    spark.sql("DROP DATABASE sales CASCADE")
    check("SHOW DATABASES after DROP", rows("SHOW DATABASES"), [("default",)])
    spark.sql("DROP TABLE totals")
    check("SHOW TABLES", rows("SHOW TABLES"), [])
    print("ok")
