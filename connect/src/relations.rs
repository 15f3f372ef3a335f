//! DataFrame operations that are several DataFusion nodes: `tail`, `na.fill`, `na.drop`,
//! `describe` and `dropDuplicates(subset)`, each with Spark's meaning.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, ExprSchema, ScalarValue};
use datafusion::functions::expr_fn::{coalesce, nanvl};
use datafusion::functions_aggregate::expr_fn as agg;
use datafusion::functions_nested::expr_fn::make_array;
use datafusion::logical_expr::{cast, lit, when, Expr, LogicalPlan, LogicalPlanBuilder, SortExpr};
use spark_connect_proto::spark::connect as sc;

use crate::errors::SparkError;
use crate::plan::{df_err, resolve};

fn numeric(t: &DataType) -> bool {
    t.is_numeric()
}

fn floating(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// `df.tail(n)`: the last `n` rows. Spark's "last" is the order of the rows, which only a
/// final `orderBy` defines here: the sort is reversed, cut to `n`, and put back.
pub fn tail(input: LogicalPlan, n: i32) -> Result<LogicalPlan, SparkError> {
    let n = usize::try_from(n).map_err(|_| SparkError::invalid("a negative tail"))?;
    let LogicalPlan::Sort(sort) = &input else {
        return Err(SparkError::unsupported(
            "tail() of rows in no defined order (end the DataFrame with orderBy(...) first)",
        ));
    };
    let reversed: Vec<SortExpr> =
        sort.expr.iter().map(|s| SortExpr::new(s.expr.clone(), !s.asc, !s.nulls_first)).collect();
    let last = LogicalPlanBuilder::from(sort.input.as_ref().clone())
        .sort_with_limit(reversed, Some(n))
        .and_then(|b| b.build())
        .map_err(df_err)?;
    LogicalPlanBuilder::from(last).sort(sort.expr.clone()).and_then(|b| b.build()).map_err(df_err)
}

/// `df.na.fill(value[, subset])` / `df.fillna({col: value})`: nulls (and NaNs of float
/// columns) replaced. One value fills the columns of its kind (a number the numeric ones,
/// cast to each column's type; a string the string ones; a boolean the boolean ones) and
/// leaves the others; a value per named column fills that column.
pub fn fill_na(input: LogicalPlan, f: &sc::NaFill) -> Result<LogicalPlan, SparkError> {
    use sc::expression::literal::LiteralType as L;
    let value = |l: &sc::expression::Literal| -> Result<ScalarValue, SparkError> {
        Ok(match &l.literal_type {
            Some(L::Long(v)) => ScalarValue::Int64(Some(*v)),
            Some(L::Integer(v)) => ScalarValue::Int64(Some(*v as i64)),
            Some(L::Double(v)) => ScalarValue::Float64(Some(*v)),
            Some(L::String(s)) => ScalarValue::Utf8(Some(s.clone())),
            Some(L::Boolean(b)) => ScalarValue::Boolean(Some(*b)),
            _ => return Err(SparkError::unsupported("na.fill with a value other than a number, string or bool")),
        })
    };
    let fits = |v: &ScalarValue, t: &DataType| match v {
        ScalarValue::Int64(_) | ScalarValue::Float64(_) => numeric(t),
        ScalarValue::Utf8(_) => string(t),
        _ => t == &DataType::Boolean,
    };
    let schema = input.schema().clone();
    let mut fills: Vec<(Column, ScalarValue)> = Vec::new();
    match (f.values.as_slice(), f.cols.len()) {
        ([], _) => return Err(SparkError::invalid("na.fill without a value")),
        ([one], _) => {
            let v = value(one)?;
            let cols = if f.cols.is_empty() {
                schema.columns()
            } else {
                f.cols.iter().map(|c| resolve(&schema, c)).collect::<Result<_, _>>()?
            };
            for c in cols {
                let t = schema.field_from_column(&c).map_err(df_err)?.data_type().clone();
                if fits(&v, &t) {
                    fills.push((c, v.clone()));
                }
            }
        }
        (many, n) if many.len() == n => {
            for (c, l) in f.cols.iter().zip(many) {
                let c = resolve(&schema, c)?;
                let v = value(l)?;
                let t = schema.field_from_column(&c).map_err(df_err)?.data_type().clone();
                if !fits(&v, &t) {
                    return Err(SparkError::analysis(
                        "DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE",
                        format!("na.fill: column `{}` of type {t} cannot take the value {v}", c.name),
                    ));
                }
                fills.push((c, v));
            }
        }
        _ => return Err(SparkError::invalid("na.fill: as many values as columns, or one")),
    }
    let mut exprs = Vec::new();
    for c in schema.columns() {
        let e = match fills.iter().find(|(f, _)| f == &c) {
            Some((_, v)) => {
                let t = schema.field_from_column(&c).map_err(df_err)?.data_type().clone();
                let v = cast(lit(v.clone()), t.clone());
                let col = Expr::Column(c.clone());
                let col = if floating(&t) { nanvl(col, v.clone()) } else { col };
                coalesce(vec![col, v]).alias(c.name.clone())
            }
            None => Expr::Column(c),
        };
        exprs.push(e);
    }
    LogicalPlanBuilder::from(input).project(exprs).and_then(|b| b.build()).map_err(df_err)
}

/// `df.na.drop(how, thresh, subset)`: rows with fewer than `min_non_nulls` values that
/// are neither null nor NaN among the columns (all of them when none are named) are
/// dropped; without `min_non_nulls`, a row needs all of them.
pub fn drop_na(input: LogicalPlan, d: &sc::NaDrop) -> Result<LogicalPlan, SparkError> {
    let schema = input.schema().clone();
    let cols: Vec<Column> = if d.cols.is_empty() {
        schema.columns()
    } else {
        d.cols.iter().map(|c| resolve(&schema, c)).collect::<Result<_, _>>()?
    };
    let need = d.min_non_nulls.map(i64::from).unwrap_or(cols.len() as i64);
    let mut count: Option<Expr> = None;
    for c in &cols {
        let t = schema.field_from_column(c).map_err(df_err)?.data_type().clone();
        let col = Expr::Column(c.clone());
        let mut present = col.clone().is_not_null();
        if floating(&t) {
            present = present.and(datafusion::functions::expr_fn::isnan(col).is_not_true());
        }
        let one = when(present, lit(1i64)).otherwise(lit(0i64)).map_err(df_err)?;
        count = Some(match count {
            Some(c) => c + one,
            None => one,
        });
    }
    let keep = match count {
        Some(c) => c.gt_eq(lit(need)),
        None => lit(true),
    };
    LogicalPlanBuilder::from(input).filter(keep).and_then(|b| b.build()).map_err(df_err)
}

/// `df.describe(cols)`: the column `summary` (count, mean, stddev, min, max) and one
/// string column per described column (all numeric and string ones when none are named).
pub fn describe(input: LogicalPlan, names: &[String]) -> Result<LogicalPlan, SparkError> {
    let schema = input.schema().clone();
    let cols: Vec<Column> = if names.is_empty() {
        schema
            .columns()
            .into_iter()
            .filter(|c| schema.field_from_column(c).is_ok_and(|f| numeric(f.data_type()) || string(f.data_type())))
            .collect()
    } else {
        // Named columns too: only the numeric and string ones are described (as in Spark).
        let named: Vec<Column> = names.iter().map(|c| resolve(&schema, c)).collect::<Result<_, _>>()?;
        named
            .into_iter()
            .filter(|c| schema.field_from_column(c).is_ok_and(|f| numeric(f.data_type()) || string(f.data_type())))
            .collect()
    };
    let text = |e: Expr| cast(e, DataType::Utf8);
    let mut aggs = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let t = schema.field_from_column(c).map_err(df_err)?.data_type().clone();
        let col = Expr::Column(c.clone());
        // Spark's mean and stddev of a string column are of its values read as numbers.
        let number = if numeric(&t) {
            col.clone()
        } else {
            Expr::TryCast(datafusion::logical_expr::TryCast::new(Box::new(col.clone()), DataType::Float64))
        };
        let mean =
            if numeric(&t) { text(crate::plan::spark_avg(col.clone(), &t)?) } else { text(agg::avg(number.clone())) };
        let stddev = text(agg::stddev(cast(number, DataType::Float64)));
        aggs.push(text(agg::count(col.clone())).alias(format!("__count{i}")));
        aggs.push(mean.alias(format!("__mean{i}")));
        aggs.push(stddev.alias(format!("__stddev{i}")));
        aggs.push(text(agg::min(col.clone())).alias(format!("__min{i}")));
        aggs.push(text(agg::max(col)).alias(format!("__max{i}")));
    }
    let stats = ["count", "mean", "stddev", "min", "max"];
    let aggregated =
        LogicalPlanBuilder::from(input).aggregate(Vec::<Expr>::new(), aggs).and_then(|b| b.build()).map_err(df_err)?;
    // One row of five values per column, unnested side by side into five rows.
    let mut arrays = vec![make_array(stats.iter().map(|s| lit(*s)).collect()).alias("summary")];
    for (i, c) in cols.iter().enumerate() {
        let vals = stats.iter().map(|s| Expr::Column(Column::from_name(format!("__{s}{i}")))).collect();
        arrays.push(make_array(vals).alias(c.name.clone()));
    }
    let mut unnest: Vec<Column> = vec![Column::from_name("summary")];
    unnest.extend(cols.iter().map(|c| Column::from_name(c.name.clone())));
    LogicalPlanBuilder::from(aggregated)
        .project(arrays)
        .and_then(|b| b.unnest_columns_with_options(unnest, Default::default()))
        .and_then(|b| b.build())
        .map_err(df_err)
}

/// `dropDuplicates(subset)`: one row per distinct value of the subset (which one is not
/// defined, as in Spark), all columns kept.
pub fn drop_duplicates(input: LogicalPlan, subset: &[String]) -> Result<LogicalPlan, SparkError> {
    let schema = input.schema().clone();
    let keys: Vec<Expr> = subset.iter().map(|c| resolve(&schema, c).map(Expr::Column)).collect::<Result<_, _>>()?;
    let all: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    LogicalPlanBuilder::from(input).distinct_on(keys, all, None).and_then(|b| b.build()).map_err(df_err)
}

/// `df.sample(fraction, seed)` and each part of `randomSplit`: the rows whose place in
/// [0, 1), a hash of the seed and the row's values (Spark's xxhash64), falls in
/// [`lower_bound`, `upper_bound`). The same data and seed give the same rows however the
/// data is split among tasks, and `randomSplit`'s parts neither overlap nor miss a row.
/// Unlike Spark's per-partition random draws, identical rows are kept or left together.
pub fn sample(
    input: LogicalPlan,
    s: &sc::Sample,
    hash: &datafusion::logical_expr::ScalarUDF,
) -> Result<LogicalPlan, SparkError> {
    if s.with_replacement.unwrap_or(false) {
        return Err(SparkError::unsupported("sample with replacement"));
    }
    let (lo, hi) = (s.lower_bound, s.upper_bound);
    if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
        return Err(SparkError::analysis(
            "INVALID_SAMPLING_FRACTION",
            format!("the sampling bounds [{lo}, {hi}) are not within [0, 1]"),
        ));
    }
    let schema = input.schema().clone();
    let mut args = vec![lit(s.seed.unwrap_or(0))];
    for c in schema.columns() {
        let t = schema.field_from_column(&c).map_err(df_err)?.data_type().clone();
        let hashable = t.is_numeric()
            || matches!(
                t,
                DataType::Boolean
                    | DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Binary
                    | DataType::Date32
                    | DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, _)
            );
        let e = Expr::Column(c);
        args.push(if hashable { e } else { cast(e, DataType::Utf8) });
    }
    // The hash, a signed 64-bit integer, as a place in [0, 1).
    let place = cast(hash.call(args), DataType::Float64) / lit(18_446_744_073_709_551_616.0f64) + lit(0.5f64);
    // The top of [0, 1) rounds to 1.0 in a double: the last part keeps it.
    let keep = if hi >= 1.0 { place.gt_eq(lit(lo)) } else { place.clone().gt_eq(lit(lo)).and(place.lt(lit(hi))) };
    LogicalPlanBuilder::from(input).filter(keep).and_then(|b| b.build()).map_err(df_err)
}
