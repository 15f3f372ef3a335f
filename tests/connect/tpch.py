"""The 22 TPC-H queries written as PySpark DataFrame code, answered as classic PySpark does.

    tpch.py data DIR            write TPC-H at scale 0.01 (tpchgen-cli, deterministic) as
                                DIR/<table>/part-0.parquet
    tpch.py gold DIR GOLD       answer every query on classic PySpark (local[2]) over DIR into
                                GOLD/qNN.json (scripts/connect-gold)
    tpch.py check BASE GOLD     answer every query on SPARK_REMOTE over BASE (a URL prefix
                                holding DIR's files) and compare with GOLD; prints "ok"

The queries follow the specification's text with its validation parameters; the
subqueries are joins (semi and anti joins for EXISTS / NOT EXISTS) and the fraction of
Q11 is 0.0001 / SF. Answers are compared as cases.py compares them.
"""
import datetime
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402

TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]
SCALE = "0.01"


def make_data(d):
    gen = os.path.join(os.path.dirname(sys.executable), "tpchgen-cli")
    flat = os.path.join(d, "flat")
    subprocess.run([gen, "parquet", "-s", SCALE, "-o", flat], check=True)
    for t in TABLES:
        os.makedirs(os.path.join(d, t), exist_ok=True)
        shutil.move(os.path.join(flat, f"{t}.parquet"), os.path.join(d, t, "part-0.parquet"))
    os.rmdir(flat)


def queries(F, spark, base):
    t = {n: spark.read.parquet(f"{base}/{n}/") for n in TABLES}
    lineitem, orders, customer, part = t["lineitem"], t["orders"], t["customer"], t["part"]
    partsupp, supplier, nation, region = t["partsupp"], t["supplier"], t["nation"], t["region"]
    c = F.col
    d = datetime.date

    def rev():
        return c("l_extendedprice") * (1 - c("l_discount"))

    q = {}
    q[1] = (
        lineitem.filter(c("l_shipdate") <= F.lit(d(1998, 9, 2)))
        .groupBy("l_returnflag", "l_linestatus")
        .agg(
            F.sum("l_quantity").alias("sum_qty"),
            F.sum("l_extendedprice").alias("sum_base_price"),
            F.sum(rev()).alias("sum_disc_price"),
            F.sum(rev() * (1 + c("l_tax"))).alias("sum_charge"),
            F.avg("l_quantity").alias("avg_qty"),
            F.avg("l_extendedprice").alias("avg_price"),
            F.avg("l_discount").alias("avg_disc"),
            F.count("*").alias("count_order"),
        )
        .orderBy("l_returnflag", "l_linestatus")
    )

    europe = (
        region.filter(c("r_name") == "EUROPE")
        .join(nation, c("r_regionkey") == c("n_regionkey"))
        .join(supplier, c("n_nationkey") == c("s_nationkey"))
        .join(partsupp, c("s_suppkey") == c("ps_suppkey"))
    )
    brass = part.filter((c("p_size") == 15) & c("p_type").endswith("BRASS")).join(
        europe, c("p_partkey") == c("ps_partkey")
    )
    cheapest = (
        brass.groupBy("ps_partkey").agg(F.min("ps_supplycost").alias("min_cost")).withColumnRenamed("ps_partkey", "min_partkey")
    )
    q[2] = (
        brass.join(cheapest, (c("ps_partkey") == c("min_partkey")) & (c("ps_supplycost") == c("min_cost")))
        .select("s_acctbal", "s_name", "n_name", "p_partkey", "p_mfgr", "s_address", "s_phone", "s_comment")
        .orderBy(c("s_acctbal").desc(), "n_name", "s_name", "p_partkey")
        .limit(100)
    )

    q[3] = (
        customer.filter(c("c_mktsegment") == "BUILDING")
        .join(orders.filter(c("o_orderdate") < F.lit(d(1995, 3, 15))), c("c_custkey") == c("o_custkey"))
        .join(lineitem.filter(c("l_shipdate") > F.lit(d(1995, 3, 15))), c("l_orderkey") == c("o_orderkey"))
        .groupBy("l_orderkey", "o_orderdate", "o_shippriority")
        .agg(F.sum(rev()).alias("revenue"))
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .orderBy(c("revenue").desc(), "o_orderdate", "l_orderkey")
        .limit(10)
    )

    q[4] = (
        orders.filter((c("o_orderdate") >= F.lit(d(1993, 7, 1))) & (c("o_orderdate") < F.lit(d(1993, 10, 1))))
        .join(lineitem.filter(c("l_commitdate") < c("l_receiptdate")), c("o_orderkey") == c("l_orderkey"), "left_semi")
        .groupBy("o_orderpriority")
        .agg(F.count("*").alias("order_count"))
        .orderBy("o_orderpriority")
    )

    q[5] = (
        region.filter(c("r_name") == "ASIA")
        .join(nation, c("r_regionkey") == c("n_regionkey"))
        .join(customer, c("n_nationkey") == c("c_nationkey"))
        .join(
            orders.filter((c("o_orderdate") >= F.lit(d(1994, 1, 1))) & (c("o_orderdate") < F.lit(d(1995, 1, 1)))),
            c("c_custkey") == c("o_custkey"),
        )
        .join(lineitem, c("l_orderkey") == c("o_orderkey"))
        .join(supplier, (c("l_suppkey") == c("s_suppkey")) & (c("c_nationkey") == c("s_nationkey")))
        .groupBy("n_name")
        .agg(F.sum(rev()).alias("revenue"))
        .orderBy(c("revenue").desc())
    )

    q[6] = lineitem.filter(
        (c("l_shipdate") >= F.lit(d(1994, 1, 1)))
        & (c("l_shipdate") < F.lit(d(1995, 1, 1)))
        & c("l_discount").between(0.05, 0.07)
        & (c("l_quantity") < 24)
    ).agg(F.sum(c("l_extendedprice") * c("l_discount")).alias("revenue"))

    supp_nation = nation.select(c("n_nationkey").alias("sn_key"), c("n_name").alias("supp_nation"))
    cust_nation = nation.select(c("n_nationkey").alias("cn_key"), c("n_name").alias("cust_nation"))
    q[7] = (
        supplier.join(supp_nation, c("s_nationkey") == c("sn_key"))
        .join(lineitem.filter(c("l_shipdate").between(d(1995, 1, 1), d(1996, 12, 31))), c("s_suppkey") == c("l_suppkey"))
        .join(orders, c("o_orderkey") == c("l_orderkey"))
        .join(customer, c("c_custkey") == c("o_custkey"))
        .join(cust_nation, c("c_nationkey") == c("cn_key"))
        .filter(
            ((c("supp_nation") == "FRANCE") & (c("cust_nation") == "GERMANY"))
            | ((c("supp_nation") == "GERMANY") & (c("cust_nation") == "FRANCE"))
        )
        .select("supp_nation", "cust_nation", F.year("l_shipdate").alias("l_year"), rev().alias("volume"))
        .groupBy("supp_nation", "cust_nation", "l_year")
        .agg(F.sum("volume").alias("revenue"))
        .orderBy("supp_nation", "cust_nation", "l_year")
    )

    cust_region = nation.select(c("n_nationkey").alias("cr_key"), c("n_regionkey").alias("cr_region"))
    q[8] = (
        part.filter(c("p_type") == "ECONOMY ANODIZED STEEL")
        .join(lineitem, c("p_partkey") == c("l_partkey"))
        .join(supplier, c("l_suppkey") == c("s_suppkey"))
        .join(orders.filter(c("o_orderdate").between(d(1995, 1, 1), d(1996, 12, 31))), c("l_orderkey") == c("o_orderkey"))
        .join(customer, c("o_custkey") == c("c_custkey"))
        .join(cust_region, c("c_nationkey") == c("cr_key"))
        .join(region.filter(c("r_name") == "AMERICA"), c("cr_region") == c("r_regionkey"))
        .join(supp_nation, c("s_nationkey") == c("sn_key"))
        .select(F.year("o_orderdate").alias("o_year"), rev().alias("volume"), c("supp_nation").alias("nation"))
        .groupBy("o_year")
        .agg((F.sum(F.when(c("nation") == "BRAZIL", c("volume")).otherwise(0)) / F.sum("volume")).alias("mkt_share"))
        .orderBy("o_year")
    )

    q[9] = (
        part.filter(c("p_name").contains("green"))
        .join(lineitem, c("p_partkey") == c("l_partkey"))
        .join(supplier, c("l_suppkey") == c("s_suppkey"))
        .join(partsupp, (c("ps_suppkey") == c("l_suppkey")) & (c("ps_partkey") == c("l_partkey")))
        .join(orders, c("o_orderkey") == c("l_orderkey"))
        .join(nation, c("s_nationkey") == c("n_nationkey"))
        .select(
            c("n_name").alias("nation"),
            F.year("o_orderdate").alias("o_year"),
            (rev() - c("ps_supplycost") * c("l_quantity")).alias("amount"),
        )
        .groupBy("nation", "o_year")
        .agg(F.sum("amount").alias("sum_profit"))
        .orderBy("nation", c("o_year").desc())
    )

    q[10] = (
        customer.join(
            orders.filter((c("o_orderdate") >= F.lit(d(1993, 10, 1))) & (c("o_orderdate") < F.lit(d(1994, 1, 1)))),
            c("c_custkey") == c("o_custkey"),
        )
        .join(lineitem.filter(c("l_returnflag") == "R"), c("l_orderkey") == c("o_orderkey"))
        .join(nation, c("c_nationkey") == c("n_nationkey"))
        .groupBy("c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment")
        .agg(F.sum(rev()).alias("revenue"))
        .select("c_custkey", "c_name", "revenue", "c_acctbal", "n_name", "c_address", "c_phone", "c_comment")
        .orderBy(c("revenue").desc(), "c_custkey")
        .limit(20)
    )

    german = (
        partsupp.join(supplier, c("ps_suppkey") == c("s_suppkey"))
        .join(nation.filter(c("n_name") == "GERMANY"), c("s_nationkey") == c("n_nationkey"))
        .select("ps_partkey", (c("ps_supplycost") * c("ps_availqty")).alias("value"))
    )
    threshold = german.agg((F.sum("value") * (0.0001 / float(SCALE))).alias("threshold"))
    q[11] = (
        german.groupBy("ps_partkey")
        .agg(F.sum("value").alias("value"))
        .crossJoin(threshold)
        .filter(c("value") > c("threshold"))
        .select("ps_partkey", "value")
        .orderBy(c("value").desc(), "ps_partkey")
    )

    urgent = c("o_orderpriority").isin("1-URGENT", "2-HIGH")
    q[12] = (
        orders.join(
            lineitem.filter(
                c("l_shipmode").isin("MAIL", "SHIP")
                & (c("l_commitdate") < c("l_receiptdate"))
                & (c("l_shipdate") < c("l_commitdate"))
                & (c("l_receiptdate") >= F.lit(d(1994, 1, 1)))
                & (c("l_receiptdate") < F.lit(d(1995, 1, 1)))
            ),
            c("o_orderkey") == c("l_orderkey"),
        )
        .groupBy("l_shipmode")
        .agg(
            F.sum(F.when(urgent, 1).otherwise(0)).alias("high_line_count"),
            F.sum(F.when(~urgent, 1).otherwise(0)).alias("low_line_count"),
        )
        .orderBy("l_shipmode")
    )

    q[13] = (
        customer.join(orders.filter(~c("o_comment").like("%special%requests%")), c("c_custkey") == c("o_custkey"), "left")
        .groupBy("c_custkey")
        .agg(F.count("o_orderkey").alias("c_count"))
        .groupBy("c_count")
        .agg(F.count("*").alias("custdist"))
        .orderBy(c("custdist").desc(), c("c_count").desc())
    )

    q[14] = (
        lineitem.filter((c("l_shipdate") >= F.lit(d(1995, 9, 1))) & (c("l_shipdate") < F.lit(d(1995, 10, 1))))
        .join(part, c("l_partkey") == c("p_partkey"))
        .agg((F.sum(F.when(c("p_type").startswith("PROMO"), rev()).otherwise(0)) * 100.0 / F.sum(rev())).alias("promo_revenue"))
    )

    revenue = (
        lineitem.filter((c("l_shipdate") >= F.lit(d(1996, 1, 1))) & (c("l_shipdate") < F.lit(d(1996, 4, 1))))
        .groupBy("l_suppkey")
        .agg(F.sum(rev()).alias("total_revenue"))
        .withColumnRenamed("l_suppkey", "supplier_no")
    )
    top = revenue.agg(F.max("total_revenue").alias("max_revenue"))
    q[15] = (
        supplier.join(revenue, c("s_suppkey") == c("supplier_no"))
        .join(top, c("total_revenue") == c("max_revenue"))
        .select("s_suppkey", "s_name", "s_address", "s_phone", "total_revenue")
        .orderBy("s_suppkey")
    )

    complainers = supplier.filter(c("s_comment").like("%Customer%Complaints%")).select(c("s_suppkey").alias("bad_suppkey"))
    q[16] = (
        partsupp.join(
            part.filter(
                (c("p_brand") != "Brand#45")
                & ~c("p_type").startswith("MEDIUM POLISHED")
                & c("p_size").isin(49, 14, 23, 45, 19, 3, 36, 9)
            ),
            c("p_partkey") == c("ps_partkey"),
        )
        .join(complainers, c("ps_suppkey") == c("bad_suppkey"), "left_anti")
        .groupBy("p_brand", "p_type", "p_size")
        .agg(F.countDistinct("ps_suppkey").alias("supplier_cnt"))
        .orderBy(c("supplier_cnt").desc(), "p_brand", "p_type", "p_size")
    )

    boxed = part.filter((c("p_brand") == "Brand#23") & (c("p_container") == "MED BOX")).join(
        lineitem, c("p_partkey") == c("l_partkey")
    )
    small = boxed.groupBy("l_partkey").agg((F.avg("l_quantity") * 0.2).alias("small_qty")).withColumnRenamed("l_partkey", "avg_partkey")
    q[17] = boxed.join(small, (c("l_partkey") == c("avg_partkey")) & (c("l_quantity") < c("small_qty"))).agg(
        (F.sum("l_extendedprice") / 7.0).alias("avg_yearly")
    )

    big = (
        lineitem.groupBy("l_orderkey")
        .agg(F.sum("l_quantity").alias("big_qty"))
        .filter(c("big_qty") > 300)
        .withColumnRenamed("l_orderkey", "big_orderkey")
    )
    q[18] = (
        customer.join(orders, c("c_custkey") == c("o_custkey"))
        .join(big, c("o_orderkey") == c("big_orderkey"), "left_semi")
        .join(lineitem, c("o_orderkey") == c("l_orderkey"))
        .groupBy("c_name", "c_custkey", "o_orderkey", "o_orderdate", "o_totalprice")
        .agg(F.sum("l_quantity").alias("sum_qty"))
        .orderBy(c("o_totalprice").desc(), "o_orderdate", "o_orderkey")
        .limit(100)
    )

    def kind(brand, containers, lo, hi, size):
        return (
            (c("p_brand") == brand)
            & c("p_container").isin(*containers)
            & c("l_quantity").between(lo, hi)
            & c("p_size").between(1, size)
        )

    q[19] = (
        lineitem.join(part, c("l_partkey") == c("p_partkey"))
        .filter(
            c("l_shipmode").isin("AIR", "AIR REG")
            & (c("l_shipinstruct") == "DELIVER IN PERSON")
            & (
                kind("Brand#12", ["SM CASE", "SM BOX", "SM PACK", "SM PKG"], 1, 11, 5)
                | kind("Brand#23", ["MED BAG", "MED BOX", "MED PKG", "MED PACK"], 10, 20, 10)
                | kind("Brand#34", ["LG CASE", "LG BOX", "LG PACK", "LG PKG"], 20, 30, 15)
            )
        )
        .agg(F.sum(rev()).alias("revenue"))
    )

    forest = part.filter(c("p_name").startswith("forest")).select(c("p_partkey").alias("f_partkey"))
    shipped = (
        lineitem.filter((c("l_shipdate") >= F.lit(d(1994, 1, 1))) & (c("l_shipdate") < F.lit(d(1995, 1, 1))))
        .groupBy("l_partkey", "l_suppkey")
        .agg((F.sum("l_quantity") * 0.5).alias("half_qty"))
    )
    candidates = (
        partsupp.join(forest, c("ps_partkey") == c("f_partkey"), "left_semi")
        .join(shipped, (c("ps_partkey") == c("l_partkey")) & (c("ps_suppkey") == c("l_suppkey")))
        .filter(c("ps_availqty") > c("half_qty"))
        .select(c("ps_suppkey").alias("cand_suppkey"))
    )
    q[20] = (
        supplier.join(nation.filter(c("n_name") == "CANADA"), c("s_nationkey") == c("n_nationkey"))
        .join(candidates, c("s_suppkey") == c("cand_suppkey"), "left_semi")
        .select("s_name", "s_address")
        .orderBy("s_name")
    )

    # EXISTS another supplier on the order, NOT EXISTS another late one: the order has two
    # suppliers or more, and one late supplier (this one).
    late = lineitem.filter(c("l_receiptdate") > c("l_commitdate"))
    several = (
        lineitem.groupBy("l_orderkey")
        .agg(F.countDistinct("l_suppkey").alias("n_supp"))
        .filter(c("n_supp") > 1)
        .select(c("l_orderkey").alias("m_orderkey"))
    )
    one_late = (
        late.groupBy("l_orderkey")
        .agg(F.countDistinct("l_suppkey").alias("n_late"))
        .filter(c("n_late") == 1)
        .select(c("l_orderkey").alias("s_orderkey"))
    )
    q[21] = (
        supplier.join(nation.filter(c("n_name") == "SAUDI ARABIA"), c("s_nationkey") == c("n_nationkey"))
        .join(late, c("s_suppkey") == c("l_suppkey"))
        .join(orders.filter(c("o_orderstatus") == "F"), c("o_orderkey") == c("l_orderkey"))
        .join(several, c("l_orderkey") == c("m_orderkey"), "left_semi")
        .join(one_late, c("l_orderkey") == c("s_orderkey"), "left_semi")
        .groupBy("s_name")
        .agg(F.count("*").alias("numwait"))
        .orderBy(c("numwait").desc(), "s_name")
        .limit(100)
    )

    codes = ["13", "31", "23", "29", "30", "18", "17"]
    phones = customer.select(F.substring("c_phone", 1, 2).alias("cntrycode"), "c_acctbal", "c_custkey").filter(
        c("cntrycode").isin(*codes)
    )
    mean_balance = phones.filter(c("c_acctbal") > 0.0).agg(F.avg("c_acctbal").alias("avg_bal"))
    q[22] = (
        phones.crossJoin(mean_balance)
        .filter(c("c_acctbal") > c("avg_bal"))
        .join(orders, c("c_custkey") == c("o_custkey"), "left_anti")
        .groupBy("cntrycode")
        .agg(F.count("*").alias("numcust"), F.sum("c_acctbal").alias("totacctbal"))
        .orderBy("cntrycode")
    )
    # Every query sorts (or is one row): its rows come in a defined order.
    return {f"q{n:02d}": (df, True) for n, df in q.items()}


def main():
    what = sys.argv[1]
    if what == "data":
        make_data(sys.argv[2])
        return
    cases.run(what, sys.argv[2], sys.argv[3], queries)


if __name__ == "__main__":
    main()
