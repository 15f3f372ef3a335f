"""DataFrame and SQL cases whose answers are classic PySpark's.

    cases.py data DIR            write the cases' input (parquet, deterministic) under DIR
    cases.py gold DIR GOLD       run every case on classic PySpark (local[2]) over DIR and
                                 write its answer to GOLD/NAME.json (scripts/connect-gold)
    cases.py check BASE GOLD     run every case on SPARK_REMOTE over BASE (a URL prefix
                                 holding DIR's files) and compare with GOLD; prints "ok"

The input has nulls, empty strings, decimals, dates and timestamps. Answers are compared
as rows (in order when the case sorts, as a multiset otherwise), floats to 1e-9, with the
column names and Spark's simple type names (`df.dtypes`).
"""
import datetime
import decimal
import json
import math
import os
import sys
import time

os.environ.setdefault("TZ", "UTC")
time.tzset()


def make_data(d):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cities = ["Lisbon", "Oslo", "", None, "Quito"]
    n = 40
    people = pa.table(
        {
            "id": pa.array(range(1, n + 1), pa.int64()),
            "name": pa.array([None if i % 11 == 0 else ("" if i % 13 == 0 else f"p{i:02d}") for i in range(1, n + 1)]),
            "city": pa.array([cities[i % len(cities)] for i in range(1, n + 1)]),
            "age": pa.array([None if i % 7 == 0 else 18 + (i * 7) % 50 for i in range(1, n + 1)], pa.int32()),
            "score": pa.array([None if i % 9 == 0 else round((i * 37 % 100) / 7.0, 6) for i in range(1, n + 1)], pa.float64()),
            "balance": pa.array(
                [None if i % 10 == 0 else decimal.Decimal(f"{(i * 7919) % 100000 - 20000}.{i % 100:02d}") for i in range(1, n + 1)],
                pa.decimal128(12, 2),
            ),
            "born": pa.array([datetime.date(1960 + i % 40, 1 + i % 12, 1 + i % 28) for i in range(1, n + 1)], pa.date32()),
            "joined": pa.array(
                [None if i % 6 == 0 else datetime.datetime(2020, 1 + i % 12, 1 + i % 28, i % 24, i % 60, tzinfo=datetime.timezone.utc) for i in range(1, n + 1)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    m = 200
    orders = pa.table(
        {
            "order_id": pa.array(range(1, m + 1), pa.int64()),
            "person_id": pa.array([None if j % 17 == 0 else 1 + (j * 13) % (n + 5) for j in range(1, m + 1)], pa.int64()),
            "amount": pa.array([decimal.Decimal(f"{(j * 31) % 500}.{(j * 7) % 100:02d}") for j in range(1, m + 1)], pa.decimal128(10, 2)),
            "qty": pa.array([1 + j % 5 for j in range(1, m + 1)], pa.int32()),
            "status": pa.array([["new", "paid", "shipped", None][j % 4] for j in range(1, m + 1)]),
        }
    )
    for name, t in [("people", people), ("orders", orders)]:
        os.makedirs(os.path.join(d, name), exist_ok=True)
        pq.write_table(t, os.path.join(d, name, "part-0.parquet"))


def cases(F, spark, base):
    people = spark.read.parquet(f"{base}/people/")
    orders = spark.read.parquet(f"{base}/orders/")
    people.createOrReplaceTempView("people")
    orders.createOrReplaceTempView("orders")
    p, o = people, orders
    from pyspark.sql import Window
    # name -> (DataFrame, whether its rows come in a defined order)
    return {
        "read_all": (p, False),
        "read_orders": (o, False),
        "select_columns": (p.select("id", "name", "balance"), False),
        "select_case_insensitive": (p.select("ID", "Name"), False),
        "select_expr_arith": (p.select("id", (F.col("age") + 1).alias("next"), (F.col("score") * 2).alias("twice")), False),
        "select_unnamed_arith": (p.select(F.col("id") + F.col("age")), False),
        "select_literals": (p.select("id", F.lit(1), F.lit("x"), F.lit(None).cast("int").alias("n")), False),
        "divide_ints": (p.select("id", (F.col("age") / F.col("id")).alias("r")), False),
        "divide_by_zero_is_null": (p.select("id", (F.col("id") / 0).alias("z")), False),
        "divide_decimal": (o.select("order_id", (F.col("amount") / F.col("qty")).alias("each")), False),
        "cast_to_string": (p.select("id", F.col("age").cast("string").alias("a")), False),
        "cast_to_double": (p.select("id", F.col("balance").cast("double").alias("b")), False),
        "filter_eq": (p.filter(F.col("city") == "Oslo"), False),
        "filter_empty_string": (p.filter(F.col("name") == ""), False),
        "filter_null": (p.filter(F.col("age").isNull()).select("id"), False),
        "filter_not_null": (p.filter(F.col("age").isNotNull()).select("id", "age"), False),
        "filter_and_or": (p.filter(((F.col("age") > 40) & (F.col("score") < 10)) | (F.col("id") == 3)), False),
        "filter_not": (p.filter(~(F.col("id") > 5)).select("id"), False),
        "filter_in": (p.filter(F.col("id").isin(1, 5, 9, 100)).select("id", "name"), False),
        "filter_decimal": (p.filter(F.col("balance") > 0).select("id", "balance"), False),
        "filter_date": (p.filter(F.col("born") >= F.lit(datetime.date(1990, 1, 1))).select("id", "born"), False),
        "where_string": (p.where("age > 30").select("id"), False),
        "sort_asc_nulls_first": (p.orderBy("age", "id").select("id", "age"), True),
        "sort_desc_nulls_last": (p.orderBy(F.col("age").desc(), "id").select("id", "age"), True),
        "sort_desc_nulls_first": (p.orderBy(F.col("score").desc_nulls_first(), "id").select("id", "score"), True),
        "sort_strings": (p.orderBy("name", "id").select("id", "name"), True),
        "sort_limit": (p.orderBy(F.col("balance").desc(), "id").limit(5).select("id", "balance"), True),
        "limit_offset": (p.orderBy("id").offset(3).limit(4).select("id"), True),
        "count_rows": (p.groupBy().count(), False),
        "group_count": (p.groupBy("city").count(), False),
        "group_agg_dict": (o.groupBy("person_id").agg({"amount": "sum"}), False),
        "group_agg_functions": (
            o.groupBy("status").agg(F.sum("qty"), F.avg("qty"), F.min("amount"), F.max("amount"), F.count("person_id")),
            False,
        ),
        "group_sum_decimal": (o.groupBy("person_id").agg(F.sum("amount").alias("total")), False),
        "group_count_distinct": (o.groupBy("status").agg(F.countDistinct("person_id").alias("people")), False),
        "group_by_two": (o.groupBy("status", "qty").agg(F.count("*").alias("n")), False),
        "agg_whole": (p.agg(F.max("age"), F.min("born"), F.sum("score")), False),
        "group_sort": (o.groupBy("person_id").agg(F.sum("qty").alias("q")).orderBy(F.col("q").desc(), "person_id"), True),
        "distinct": (p.select("city").distinct(), False),
        "drop_duplicates_all": (o.select("status", "qty").dropDuplicates(), False),
        "with_column": (p.withColumn("age2", F.col("age") * 2).select("id", "age2"), False),
        "with_column_replaces": (p.withColumn("age", F.col("age") + 100).select("id", "age"), False),
        "with_column_renamed": (p.withColumnRenamed("name", "who").select("id", "who"), False),
        "drop": (p.drop("joined", "born", "balance"), False),
        "to_df": (p.select("id", "name").toDF("a", "b"), False),
        "alias_select": (p.alias("x").select("x.id", "x.city"), False),
        "join_on_expression": (p.join(o, p["id"] == o["person_id"]).select("id", "order_id", "amount"), False),
        "join_on_name": (o.withColumnRenamed("person_id", "id").join(p, "id").select("id", "order_id", "name"), False),
        "join_left": (p.join(o, p["id"] == o["person_id"], "left").select("id", "order_id"), False),
        "join_right": (p.join(o, p["id"] == o["person_id"], "right").select("id", "order_id"), False),
        "join_full": (p.join(o, p["id"] == o["person_id"], "full").select("id", "order_id"), False),
        "join_semi": (p.join(o, p["id"] == o["person_id"], "left_semi").select("id"), False),
        "join_anti": (p.join(o, p["id"] == o["person_id"], "left_anti").select("id"), False),
        "join_agg": (p.join(o, p["id"] == o["person_id"]).groupBy("city").agg(F.sum("amount").alias("total")), False),
        "union": (p.select("id").union(o.select("order_id")), False),
        "union_by_name": (p.select("id", "name").unionByName(p.select("name", "id")), False),
        "intersect": (p.select("id").intersect(o.select("person_id")), False),
        "subtract": (p.select("id").subtract(o.select("person_id")), False),
        "sql_select": (spark.sql("SELECT id, name FROM people WHERE age > 40"), False),
        "sql_group": (spark.sql("SELECT status, count(*) AS n, sum(qty) AS q FROM orders GROUP BY status"), False),
        "sql_join": (spark.sql("SELECT p.id, o.amount FROM people p JOIN orders o ON p.id = o.person_id WHERE o.qty > 3"), False),
        "sql_order_nulls": (spark.sql("SELECT id, age FROM people ORDER BY age, id"), True),
        "create_data_frame": (spark.createDataFrame([(1, "a", 1.5), (2, None, None)], ["k", "v", "f"]), False),
        "range": (spark.range(3, 20, 4), False),
        "lower_upper": (p.select("id", F.lower("name").alias("l"), F.upper("city").alias("u")), False),
        "coalesce": (p.select("id", F.coalesce("name", "city").alias("c")), False),
        "abs_sqrt": (p.select("id", F.abs("balance").alias("a"), F.sqrt("score").alias("s")), False),
        "window_row_number": (p.withColumn("rn", F.row_number().over(Window.partitionBy("city").orderBy("id"))).select("id", "city", "rn"), False),
        "window_rank_desc": (o.select("order_id", "person_id", F.rank().over(Window.partitionBy("person_id").orderBy(F.col("amount").desc())).alias("r")), False),
        "window_dense_rank": (o.select("order_id", F.dense_rank().over(Window.orderBy("qty")).alias("d")), False),
        "window_running_sum": (o.select("order_id", F.sum("qty").over(Window.partitionBy("status").orderBy("order_id")).alias("run")), False),
        "window_lag_lead": (o.select("order_id", F.lag("qty", 1).over(Window.orderBy("order_id")).alias("prev"), F.lead("qty", 2, 0).over(Window.orderBy("order_id")).alias("next2")), False),
        "window_partition_total": (o.select("order_id", F.sum("amount").over(Window.partitionBy("person_id")).alias("t")), False),
        "window_rows_frame": (o.select("order_id", F.avg("qty").over(Window.orderBy("order_id").rowsBetween(-2, 0)).alias("ma")), False),
        "when_otherwise": (p.select("id", F.when(F.col("age") < 30, "young").when(F.col("age") < 50, "middle").otherwise("old").alias("band")), False),
        "when_no_otherwise": (p.select("id", F.when(F.col("city") == "Oslo", F.col("balance"))), False),
        "when_widens": (o.select("order_id", F.when(F.col("qty") > 2, F.col("amount")).otherwise(0).alias("big")), False),
        "like": (p.filter(F.col("name").like("p1%")).select("id", "name"), False),
        "not_like_escape": (p.select("id", (~F.col("city").like("%s%")).alias("no_s"), F.col("name").like("p_1").alias("p_1")), False),
        "starts_ends_contains": (p.select("id", F.col("city").startswith("O").alias("o"), F.col("city").endswith("o").alias("e"), F.col("name").contains("1").alias("c")), False),
        "startswith_unnamed": (p.select(F.col("city").startswith("Q")), False),
        "year_month_day": (p.select("id", F.year("born").alias("y"), F.month("born").alias("m"), F.dayofmonth("born").alias("d"), F.quarter("born").alias("q")), False),
        "year_unnamed": (p.select(F.year("born")), False),
        "substring": (p.select("id", F.substring("name", 2, 1).alias("s1"), F.substring("city", 0, 2).alias("s0"), F.substring("city", -3, 2).alias("neg")), False),
        "substr_column": (p.select("id", F.col("city").substr(1, 3).alias("c3")), False),
        "concat_length": (p.select("id", F.concat("name", F.lit("-"), "city").alias("nc"), F.length("city").alias("n")), False),
        "round_floor_ceil": (p.select("id", F.round("balance", 1).alias("r1"), F.round("balance").alias("r0"), F.floor("score").alias("f"), F.ceil("score").alias("c")), False),
        "floor_ceil_round_names": (p.select(F.floor("score"), F.ceil("score"), F.round("balance")), False),
        "when_decimal_double": (o.select("order_id", F.when(F.col("qty") > 2, F.col("amount")).otherwise(0.5).alias("x")), False),
        "round_decimal": (p.select("id", F.round("balance", 0).alias("b0")), False),
        "date_arith": (p.select("id", F.date_add("born", 10).alias("plus"), F.date_sub("born", 40).alias("minus"), F.datediff(F.lit(datetime.date(2000, 1, 1)), "born").alias("days")), False),
        "sql_spark_functions": (spark.sql("SELECT id, substring(city, 2, 3) AS s, concat(name, city) AS c, length(city) AS n FROM people"), False),
        "fillna_number": (p.fillna(0).select("id", "age", "score", "balance", "name"), False),
        "fillna_string_subset": (p.fillna("?", subset=["name", "age"]).select("id", "name", "city", "age"), False),
        "fillna_dict": (p.na.fill({"age": 1, "city": "nowhere", "score": 0.5}).select("id", "age", "city", "score"), False),
        "dropna_any": (p.dropna().select("id"), False),
        "dropna_all_subset": (p.dropna(how="all", subset=["age", "score"]).select("id"), False),
        "dropna_thresh": (p.na.drop(thresh=7).select("id"), False),
        "describe": (p.describe("age", "score", "balance", "name"), False),
        "describe_all": (o.describe(), False),
        "tail": (spark.createDataFrame(p.orderBy("id").tail(3)), False),
        "drop_duplicates_subset": (o.select("status", F.col("status").isNull().alias("missing")).dropDuplicates(["status"]), False),
        # Spark SQL's dialect and names, planned as the DataFrame API's are.
        "sql_unaliased_aggregates": (spark.sql("SELECT status, sum(qty), count(*), avg(amount), max(amount), count(DISTINCT person_id) FROM orders GROUP BY status"), False),
        "sql_avg_round": (spark.sql("SELECT person_id, round(avg(amount), 2) AS a, avg(qty) AS q FROM orders GROUP BY person_id"), False),
        "sql_division": (spark.sql("SELECT id, age / id AS r, id / 0 AS z, balance / 3 AS b FROM people"), False),
        "sql_double_quoted_strings": (spark.sql('SELECT id, "x" AS s FROM people WHERE city = "Oslo"'), False),
        "sql_names_ignore_case": (spark.sql("SELECT ID, Name FROM People WHERE AGE > 40"), False),
        "sql_decimal_literals": (spark.sql("SELECT id, balance * 1.5 AS b, age + 0.25 AS a, 2.5 AS c, 1e2 AS d FROM people"), False),
        "sql_having_alias": (spark.sql("SELECT person_id, sum(amount) AS total FROM orders GROUP BY person_id HAVING total > 1000 ORDER BY total DESC, person_id"), True),
        "sql_ordinals": (spark.sql("SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 2 DESC, 1"), True),
        "sql_order_by_unselected": (spark.sql("SELECT name FROM people ORDER BY age DESC, id"), True),
        "sql_order_by_aggregate": (spark.sql("SELECT status FROM orders GROUP BY status ORDER BY sum(qty) DESC, status"), True),
        "sql_cte_and_subquery": (spark.sql("WITH big AS (SELECT * FROM orders WHERE qty >= 3) SELECT t.person_id, t.n FROM (SELECT person_id, count(*) AS n FROM big GROUP BY person_id) t WHERE t.n > 2"), False),
        "sql_windows": (spark.sql("SELECT order_id, row_number() OVER (PARTITION BY person_id ORDER BY amount DESC, order_id) AS rn, sum(qty) OVER (PARTITION BY status) AS s, avg(qty) OVER (ORDER BY order_id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS ma FROM orders"), False),
        "sql_case_when": (spark.sql("SELECT id, CASE WHEN age < 30 THEN 'young' WHEN age < 50 THEN 'middle' ELSE 'old' END AS band, CASE city WHEN 'Oslo' THEN 1 ELSE 0 END AS oslo FROM people"), False),
        "sql_between_in_like": (spark.sql("SELECT id FROM people WHERE age BETWEEN 30 AND 50 AND city IN ('Oslo', 'Quito') OR name LIKE 'p1%' OR id NOT IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30)"), False),
        "sql_union_order": (spark.sql("SELECT id AS k FROM people WHERE id < 5 UNION ALL SELECT order_id FROM orders WHERE order_id < 4 ORDER BY k DESC"), True),
        "sql_union_distinct": (spark.sql("SELECT city FROM people UNION SELECT status FROM orders"), False),
        "sql_join_using": (spark.sql("SELECT id, order_id FROM people LEFT JOIN (SELECT person_id AS id, order_id FROM orders) o USING (id)"), False),
        "sql_distinct": (spark.sql("SELECT DISTINCT city FROM people"), False),
        "sql_cast_if_nvl": (spark.sql("SELECT id, CAST(balance AS DOUBLE) AS b, if(age > 40, 'old', 'young') AS o, nvl(name, 'none') AS n FROM people"), False),
        "sql_limit_offset": (spark.sql("SELECT id FROM people ORDER BY id LIMIT 5 OFFSET 3"), True),
        "sql_date_literal_concat": (spark.sql("SELECT id, name || '-' || city AS nc FROM people WHERE born >= DATE '1990-01-01'"), False),
        "sql_files": (spark.sql(f"SELECT count(*) AS n, sum(qty) AS q FROM parquet.`{base}/orders/`"), False),
        "sql_select_without_from": (spark.sql("SELECT 1 AS one, 'a' AS s, 1.25 AS d"), False),
        "sql_semi_anti": (spark.sql("SELECT p.id FROM people p LEFT ANTI JOIN orders o ON p.id = o.person_id"), False),
        "expr_strings": (o.filter("status = 'paid' AND qty > 2").selectExpr("order_id", "qty * 2 AS q2", "amount / qty", "amount * 2"), False),
        "expr_aggregate": (o.groupBy("status").agg(F.expr("avg(amount)"), F.expr("count(*) AS n")), False),
        "select_expr_star": (p.selectExpr("*", "age + 1 AS next").drop("joined", "born"), False),
        "round_double": (p.select("id", F.round("score", 1).alias("r1"), F.round("score").alias("r0"), F.round(F.col("score") * 100, -1).alias("tens"), F.round("age", 1).alias("int")), False),
        "sql_round_double": (spark.sql("SELECT status, round(avg(qty), 2) AS a, round(sum(qty) / 7, 3) AS s FROM orders GROUP BY status"), False),
        "stats_aggregates": (o.groupBy("status").agg(F.stddev("qty"), F.stddev_pop("qty"), F.variance("amount"), F.var_pop("qty"), F.stddev_samp("amount")), False),
        "stats_one_row": (p.filter(F.col("id") == 1).agg(F.stddev("age").alias("s"), F.variance("age").alias("v"), F.stddev_pop("age").alias("p")), False),
        "to_date_dayofweek": (p.select("id", F.to_date("joined").alias("d"), F.to_date(F.lit("2021-03-04")).alias("s"), F.to_date(F.lit("no date")).alias("n"), F.dayofweek("born").alias("w")), False),
        "concat_ws": (p.select("id", F.concat_ws("-", "name", "city").alias("c"), F.concat_ws(",", "city", F.lit("x"), "name")), False),
        "date_trunc": (p.select("id", F.date_trunc("month", "joined").alias("m"), F.date_trunc("hour", "joined").alias("h"), F.date_trunc("year", "born").alias("y")), False),
        "sql_stats": (spark.sql("SELECT status, stddev(qty) AS s, variance(qty) AS v, concat_ws('/', status, 'x') AS c, to_date('2020-02-29') AS d FROM orders GROUP BY status"), False),
        "window_count_max": (p.select("id", F.count("age").over(Window.partitionBy("city")).alias("n"), F.max("score").over(Window.partitionBy("city")).alias("m")), False),
    }


def plain(v):
    if isinstance(v, decimal.Decimal):
        return ["decimal", str(v)]
    if isinstance(v, datetime.datetime):
        return ["timestamp", v.isoformat()]
    if isinstance(v, datetime.date):
        return ["date", v.isoformat()]
    if isinstance(v, float):
        return ["float", None if math.isnan(v) else v]
    return v


def answer(df, ordered):
    rows = [[plain(v) for v in r] for r in df.collect()]
    if not ordered:
        rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
    return {"columns": [list(c) for c in df.dtypes], "ordered": ordered, "rows": rows}


def same(a, b):
    if isinstance(a, list) and isinstance(b, list) and len(a) == 2 and a and a[0] == "float" and b and b[0] == "float":
        if a[1] is None or b[1] is None:
            return a[1] == b[1]
        return math.isclose(a[1], b[1], rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def run(what, a, b, make_cases):
    """`gold DIR GOLD` or `check BASE GOLD` (see the module's doc) over `make_cases`."""
    from pyspark.sql import SparkSession, functions as F

    if what == "gold":
        spark = SparkSession.builder.master("local[2]").config("spark.sql.session.timeZone", "UTC") \
            .config("spark.sql.ansi.enabled", "false").getOrCreate()
        base, gold = "file://" + os.path.abspath(a), b
        os.makedirs(gold, exist_ok=True)
        all_cases = make_cases(F, spark, base)
        for name, (df, ordered) in all_cases.items():
            ans = answer(df, ordered)
            rows = ",\n".join(json.dumps(r) for r in ans["rows"])
            with open(os.path.join(gold, f"{name}.json"), "w") as f:
                f.write(f'{{"columns": {json.dumps(ans["columns"])}, "ordered": {json.dumps(ordered)}, "rows": [\n{rows}\n]}}\n')
        print(f"wrote {len(all_cases)} answers to {gold}")
        return
    assert what == "check", __doc__
    spark = SparkSession.builder.getOrCreate()
    base, gold = a, b
    failed = []
    all_cases = make_cases(F, spark, base)
    for name, (df, ordered) in all_cases.items():
        with open(os.path.join(gold, f"{name}.json")) as f:
            want = json.load(f)
        try:
            got = answer(df, ordered)
        except Exception as e:  # noqa: BLE001 - reported per case
            failed.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            continue
        if got["columns"] != want["columns"]:
            failed.append(f"{name}: columns {got['columns']} != {want['columns']}")
        elif not same(got["rows"], want["rows"]):
            failed.append(f"{name}: rows differ: got {got['rows'][:3]}... want {want['rows'][:3]}...")
    for f in failed:
        print("FAIL", f)
    print(f"{len(all_cases) - len(failed)}/{len(all_cases)} cases as classic PySpark")
    if not failed:
        print("ok")


def main():
    what = sys.argv[1]
    if what == "data":
        make_data(sys.argv[2])
        return
    run(what, sys.argv[2], sys.argv[3], cases)


if __name__ == "__main__":
    main()
