//! Spark Connect's unresolved plans as DataFusion logical plans, with Spark's names and
//! semantics where DataFusion's differ (case-insensitive columns, Spark's output names
//! such as `sum(purchase_amount)`, `/` in double, nulls first in ascending sorts).
//!
//! What is not translated is refused before anything runs, naming the relation,
//! expression or function ([`SparkError::unsupported`]): never a wrong result.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, ScalarValue, TableReference};
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::{
    csv::CsvFormatFactory, json::JsonFormatFactory, parquet::ParquetFormatFactory,
};
use datafusion::datasource::ViewTable;
use datafusion::functions_aggregate::expr_fn as agg;
use datafusion::logical_expr::{
    cast, lit, not, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, Operator, SortExpr,
};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use futures::future::BoxFuture;
use sc::expression::{self as ex, ExprType};
use sc::relation::RelType;
use spark_connect_proto::spark::connect as sc;

use crate::errors::SparkError;
use crate::types;

/// Translates one request's plans in `ctx` (the user's stores and temp views).
pub struct Planner<'a> {
    pub ctx: &'a SessionContext,
    /// Relative paths resolve under this directory (`/user/NAME`, as in HDFS).
    pub home: &'a str,
    /// The cluster as the user sees it: a missing input path is named before DataFusion
    /// would call it an empty location.
    pub nn: &'a tarn_client::NamenodeClient,
}

/// A data source path as a URL DataFusion reads: `s3://`, `s3a://` and `tarn://` are the
/// cluster's; an absolute path is a cluster path; a relative one is under `home`.
pub fn resolve_path(path: &str, home: &str) -> Result<String, SparkError> {
    if path.is_empty() {
        return Err(SparkError::invalid("an empty path"));
    }
    if let Some((scheme, _)) = path.split_once("://") {
        return match scheme {
            "s3" | "s3a" | "tarn" => Ok(path.to_string()),
            other => Err(SparkError::unsupported(format!("paths of scheme {other}:// ({path})"))),
        };
    }
    if path.starts_with('/') {
        return Ok(format!("tarn://{path}"));
    }
    Ok(format!("tarn://{}/{}", home.trim_end_matches('/'), path))
}

pub(crate) fn df_err(e: datafusion::error::DataFusionError) -> SparkError {
    SparkError::from_datafusion(e)
}

impl<'a> Planner<'a> {
    /// The logical plan of `rel`.
    pub fn relation<'b>(&'b self, rel: &'b sc::Relation) -> BoxFuture<'b, Result<LogicalPlan, SparkError>> {
        Box::pin(async move {
            let Some(t) = &rel.rel_type else { return Err(SparkError::invalid("a relation without a type")) };
            match t {
                RelType::Read(r) => self.read(r).await,
                RelType::Project(p) => {
                    let input = match &p.input {
                        Some(i) => self.relation(i).await?,
                        // `spark.select(...)`-like projections of nothing: one row.
                        None => LogicalPlanBuilder::empty(true).build().map_err(df_err)?,
                    };
                    self.project(input, &p.expressions)
                }
                RelType::Filter(f) => {
                    let input = self.input(&f.input).await?;
                    let cond =
                        f.condition.as_ref().ok_or_else(|| SparkError::invalid("a filter without a condition"))?;
                    let (e, _) = self.expr(cond, input.schema())?;
                    LogicalPlanBuilder::from(input).filter(e).and_then(|b| b.build()).map_err(df_err)
                }
                RelType::Aggregate(a) => self.aggregate(a).await,
                RelType::Sort(s) => {
                    let input = self.input(&s.input).await?;
                    let order =
                        s.order.iter().map(|o| self.sort_order(o, input.schema())).collect::<Result<Vec<_>, _>>()?;
                    LogicalPlanBuilder::from(input).sort(order).and_then(|b| b.build()).map_err(df_err)
                }
                RelType::Limit(l) => {
                    let input = self.input(&l.input).await?;
                    let n = usize::try_from(l.limit).map_err(|_| SparkError::invalid("a negative limit"))?;
                    LogicalPlanBuilder::from(input).limit(0, Some(n)).and_then(|b| b.build()).map_err(df_err)
                }
                RelType::Offset(o) => {
                    let input = self.input(&o.input).await?;
                    let n = usize::try_from(o.offset).map_err(|_| SparkError::invalid("a negative offset"))?;
                    LogicalPlanBuilder::from(input).limit(n, None).and_then(|b| b.build()).map_err(df_err)
                }
                #[allow(deprecated)]
                RelType::Sql(q) => {
                    if !q.args.is_empty()
                        || !q.pos_args.is_empty()
                        || !q.named_arguments.is_empty()
                        || !q.pos_arguments.is_empty()
                    {
                        return Err(SparkError::unsupported("parameters of spark.sql"));
                    }
                    // Spark SQL, planned as the DataFrame path plans (see `sql`); what
                    // that does not translate, DataFusion's SQL planner with its checks.
                    let query = crate::sql::parse_query(&q.query)?;
                    match self.spark_sql(&query).await {
                        Ok(plan) => Ok(plan),
                        Err(crate::sql::SqlError::Spark(e)) => Err(e),
                        Err(crate::sql::SqlError::Untranslated(what)) => {
                            tracing::debug!(%what, "spark.sql: planned by DataFusion's SQL planner");
                            self.datafusion_sql(query).await
                        }
                    }
                }
                RelType::Range(r) => self.range(r),
                RelType::SubqueryAlias(a) => {
                    let input = self.input(&a.input).await?;
                    LogicalPlanBuilder::from(input).alias(a.alias.as_str()).and_then(|b| b.build()).map_err(df_err)
                }
                RelType::ToDf(t) => {
                    let input = self.input(&t.input).await?;
                    let fields = input.schema().columns();
                    if fields.len() != t.column_names.len() {
                        return Err(SparkError::analysis(
                            "INVALID_COLUMN_NAMES",
                            format!("toDF names {} columns; the data has {}", t.column_names.len(), fields.len()),
                        ));
                    }
                    let exprs: Vec<Expr> =
                        fields.into_iter().zip(&t.column_names).map(|(c, n)| Expr::Column(c).alias(n)).collect();
                    LogicalPlanBuilder::from(input).project(exprs).and_then(|b| b.build()).map_err(df_err)
                }
                RelType::WithColumnsRenamed(w) => {
                    let input = self.input(&w.input).await?;
                    let mut renames: Vec<(String, String)> =
                        w.renames.iter().map(|r| (r.col_name.clone(), r.new_col_name.clone())).collect();
                    renames.extend(w.rename_columns_map.iter().map(|(a, b)| (a.clone(), b.clone())));
                    let exprs: Vec<Expr> = input
                        .schema()
                        .columns()
                        .into_iter()
                        .map(|c| match renames.iter().find(|(from, _)| from.eq_ignore_ascii_case(&c.name)) {
                            Some((_, to)) => Expr::Column(c).alias(to),
                            None => Expr::Column(c),
                        })
                        .collect();
                    LogicalPlanBuilder::from(input).project(exprs).and_then(|b| b.build()).map_err(df_err)
                }
                RelType::WithColumns(w) => {
                    let input = self.input(&w.input).await?;
                    let mut added: Vec<(String, Expr)> = Vec::new();
                    for a in &w.aliases {
                        let [name] = a.name.as_slice() else {
                            return Err(SparkError::unsupported("withColumns with a multi-part name"));
                        };
                        let inner =
                            a.expr.as_deref().ok_or_else(|| SparkError::invalid("an alias without an expression"))?;
                        let (e, _) = self.expr(inner, input.schema())?;
                        added.push((name.clone(), e));
                    }
                    let mut exprs = Vec::new();
                    for c in input.schema().columns() {
                        match added.iter().position(|(n, _)| n.eq_ignore_ascii_case(&c.name)) {
                            Some(i) => {
                                let (n, e) = added.remove(i);
                                exprs.push(e.alias(n));
                            }
                            None => exprs.push(Expr::Column(c)),
                        }
                    }
                    exprs.extend(added.into_iter().map(|(n, e)| e.alias(n)));
                    project_with_windows(input, exprs)
                }
                RelType::Drop(d) => {
                    let input = self.input(&d.input).await?;
                    let mut gone: Vec<Column> = Vec::new();
                    for n in &d.column_names {
                        // Dropping a column that is not there is not an error in Spark.
                        if let Ok(c) = resolve(input.schema(), n) {
                            gone.push(c);
                        }
                    }
                    for e in &d.columns {
                        if let (Expr::Column(c), _) = self.expr(e, input.schema())? {
                            gone.push(c);
                        }
                    }
                    let exprs: Vec<Expr> =
                        input.schema().columns().into_iter().filter(|c| !gone.contains(c)).map(Expr::Column).collect();
                    LogicalPlanBuilder::from(input).project(exprs).and_then(|b| b.build()).map_err(df_err)
                }
                RelType::Join(j) => self.join(j).await,
                RelType::SetOp(o) => self.set_op(o).await,
                RelType::LocalRelation(l) => local_relation(l),
                RelType::Deduplicate(d) => {
                    let input = self.input(&d.input).await?;
                    if d.all_columns_as_keys.unwrap_or(false) || d.column_names.is_empty() {
                        return LogicalPlanBuilder::from(input).distinct().and_then(|b| b.build()).map_err(df_err);
                    }
                    crate::relations::drop_duplicates(input, &d.column_names)
                }
                RelType::Tail(t) => crate::relations::tail(self.input(&t.input).await?, t.limit),
                RelType::FillNa(f) => crate::relations::fill_na(self.input(&f.input).await?, f),
                RelType::DropNa(d) => crate::relations::drop_na(self.input(&d.input).await?, d),
                RelType::Describe(d) => crate::relations::describe(self.input(&d.input).await?, &d.cols),
                RelType::Sample(x) => {
                    let hash = self.session_function(&format!("{}xxhash64", tarn_jobs::functions::PREFIX))?;
                    crate::relations::sample(self.input(&x.input).await?, x, &hash)
                }
                RelType::ShowString(_) => Err(SparkError::invalid("show() is a result, not an input")),
                other => Err(SparkError::unsupported(format!("the relation {}", relation_name(other)))),
            }
        })
    }

    /// A join's side, its columns qualified by the side's plan id so that `df1["id"]`
    /// and `df2["id"]` stay apart.
    async fn side(&self, rel: &Option<Box<sc::Relation>>, n: usize) -> Result<(LogicalPlan, Option<i64>), SparkError> {
        let r = rel.as_deref().ok_or_else(|| SparkError::invalid("a join without both sides"))?;
        let plan = self.relation(r).await?;
        let id = r.common.as_ref().and_then(|c| c.plan_id);
        let alias = id.map(side_alias).unwrap_or_else(|| format!("__side{n}"));
        let plan = LogicalPlanBuilder::from(plan).alias(alias).and_then(|b| b.build()).map_err(df_err)?;
        Ok((plan, id))
    }

    async fn join(&self, j: &sc::Join) -> Result<LogicalPlan, SparkError> {
        use datafusion::common::JoinType as J;
        use sc::join::JoinType as S;
        let (left, lid) = self.side(&j.left, 0).await?;
        let (right, rid) = self.side(&j.right, 1).await?;
        if lid.is_some() && lid == rid {
            return Err(SparkError::unsupported("a join of a DataFrame with itself (alias one side first)"));
        }
        let kind = S::try_from(j.join_type).unwrap_or(S::Unspecified);
        let jt = match kind {
            S::Inner | S::Unspecified => J::Inner,
            S::FullOuter => J::Full,
            S::LeftOuter => J::Left,
            S::RightOuter => J::Right,
            S::LeftAnti => J::LeftAnti,
            S::LeftSemi => J::LeftSemi,
            S::Cross => J::Inner,
        };
        if j.join_data_type.is_some() {
            return Err(SparkError::unsupported("joinWith"));
        }
        let both = left.schema().join(right.schema()).map_err(df_err)?;
        if !j.using_columns.is_empty() {
            return join_using(left, right, jt, &j.using_columns);
        }
        let b = LogicalPlanBuilder::from(left);
        let built = match &j.join_condition {
            Some(cond) => {
                let (e, _) = self.expr(cond, &both)?;
                b.join_on(right, jt, [e])
            }
            None if jt == J::Inner => b.cross_join(right),
            None => return Err(SparkError::invalid("an outer join without a condition")),
        };
        built.and_then(|b| b.build()).map_err(df_err)
    }

    async fn set_op(&self, o: &sc::SetOperation) -> Result<LogicalPlan, SparkError> {
        use sc::set_operation::SetOpType;
        let left = self.input(&o.left_input).await?;
        let mut right = self.input(&o.right_input).await?;
        let all = o.is_all.unwrap_or(false);
        let kind = SetOpType::try_from(o.set_op_type).unwrap_or(SetOpType::Unspecified);
        let (ln, rn) = (left.schema().fields().len(), right.schema().fields().len());
        match kind {
            SetOpType::Union => {
                if o.by_name.unwrap_or(false) {
                    if o.allow_missing_columns.unwrap_or(false) {
                        return Err(SparkError::unsupported("unionByName with allowMissingColumns"));
                    }
                    let mut exprs = Vec::new();
                    for f in left.schema().fields() {
                        exprs.push(Expr::Column(resolve(right.schema(), f.name())?).alias(f.name()));
                    }
                    if rn != ln {
                        return Err(num_columns(ln, rn));
                    }
                    right = LogicalPlanBuilder::from(right).project(exprs).and_then(|b| b.build()).map_err(df_err)?;
                } else if rn != ln {
                    return Err(num_columns(ln, rn));
                }
                let b = LogicalPlanBuilder::from(left);
                let b = if all { b.union(right) } else { b.union_distinct(right) };
                b.and_then(|b| b.build()).map_err(df_err)
            }
            SetOpType::Intersect | SetOpType::Except if all => Err(SparkError::unsupported("intersectAll / exceptAll")),
            SetOpType::Intersect => LogicalPlanBuilder::intersect(left, right, false).map_err(df_err),
            SetOpType::Except => LogicalPlanBuilder::except(left, right, false).map_err(df_err),
            SetOpType::Unspecified => Err(SparkError::invalid("a set operation without a type")),
        }
    }

    /// A query planned by DataFusion's SQL planner, refused where its meaning would not
    /// be Spark's ([`check_sql_plan`]). Queries only: a statement would run here, in the
    /// endpoint, on a context thrown away after the request.
    async fn datafusion_sql(&self, query: datafusion::sql::sqlparser::ast::Query) -> Result<LogicalPlan, SparkError> {
        use datafusion::sql::parser::Statement as Df;
        use datafusion::sql::sqlparser::ast::Statement as Sql;
        let state = self.ctx.state();
        let plan =
            state.statement_to_plan(Df::Statement(Box::new(Sql::Query(Box::new(query))))).await.map_err(df_err)?;
        datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(df_err)?;
        check_sql_plan(&plan)?;
        decorrelate(plan, &state)
    }

    async fn input(&self, input: &Option<Box<sc::Relation>>) -> Result<LogicalPlan, SparkError> {
        match input {
            Some(i) => self.relation(i).await,
            None => Err(SparkError::invalid("a relation without its input")),
        }
    }

    async fn read(&self, r: &sc::Read) -> Result<LogicalPlan, SparkError> {
        use sc::read::ReadType;
        let Some(t) = &r.read_type else { return Err(SparkError::invalid("a read without a source")) };
        if r.is_streaming {
            return Err(SparkError::unsupported("streaming reads"));
        }
        match t {
            ReadType::NamedTable(t) => {
                let name = t.unparsed_identifier.trim_matches('`');
                let df = self.ctx.table(name).await.map_err(|_| {
                    SparkError::analysis_with(
                        "TABLE_OR_VIEW_NOT_FOUND",
                        format!("The table or view `{name}` cannot be found."),
                        "42P01",
                        &[("relationName", format!("`{name}`"))],
                    )
                })?;
                Ok(df.into_unoptimized_plan())
            }
            ReadType::DataSource(d) => {
                let format = d.format.as_deref().unwrap_or("parquet").to_ascii_lowercase();
                if d.paths.is_empty() {
                    return Err(SparkError::invalid(format!("a {format} read without a path")));
                }
                let mut paths = d.paths.iter().map(|p| resolve_path(p, self.home)).collect::<Result<Vec<_>, _>>()?;
                for (url, given) in paths.iter_mut().zip(&d.paths) {
                    let Some((path, _)) = tarn_jobs::commit::cluster_path(url) else { continue };
                    if path.contains(['*', '?', '[', '{']) {
                        continue;
                    }
                    match self.nn.get_file_info(&path, false).await {
                        // A directory is read whole, named with a slash or not (DataFusion
                        // takes a URL without one for a file).
                        Ok(Some(st)) if st.is_dir() && !url.ends_with('/') => url.push('/'),
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            return Err(SparkError::analysis_with(
                                "PATH_NOT_FOUND",
                                format!("Path does not exist: {given}."),
                                "42K03",
                                &[("path", given.clone())],
                            ))
                        }
                        Err(e) if e.kind() == tarn_client::ErrorKind::PermissionDenied => {
                            return Err(SparkError::analysis_with(
                                "INSUFFICIENT_PERMISSIONS",
                                format!("Permission denied: {given} ({e})."),
                                "42501",
                                &[("path", given.clone())],
                            ))
                        }
                        Err(e) => return Err(SparkError::internal(format!("look up {given}: {e}"))),
                    }
                }
                let schema = match d.schema.as_deref().filter(|s| !s.trim().is_empty()) {
                    Some(s) => Some(ddl_schema(s)?),
                    None => None,
                };
                let opt =
                    |k: &str| d.options.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
                // Options not honoured are refused, not ignored.
                let known: &[&str] = match format.as_str() {
                    "csv" => &["header", "inferschema", "sep", "delimiter", "path"],
                    _ => &["path"],
                };
                if let Some(k) = d.options.keys().find(|k| !known.contains(&k.to_ascii_lowercase().as_str())) {
                    return Err(SparkError::unsupported(format!("the {format} read option {k:?}")));
                }
                let df = match format.as_str() {
                    "parquet" => {
                        let mut o = ParquetReadOptions::default();
                        if let Some(s) = &schema {
                            o = o.schema(s);
                        }
                        self.ctx.read_parquet(paths, o).await
                    }
                    "csv" => {
                        let mut o = CsvReadOptions::new()
                            .has_header(opt("header").is_some_and(|v| v.eq_ignore_ascii_case("true")))
                            .file_extension(".csv");
                        if let Some(sep) = opt("sep").or(opt("delimiter")) {
                            let [b] = sep.as_bytes() else {
                                return Err(SparkError::unsupported(format!("the csv separator {sep:?}")));
                            };
                            o = o.delimiter(*b);
                        }
                        let infer = opt("inferSchema").is_some_and(|v| v.eq_ignore_ascii_case("true"));
                        match &schema {
                            Some(s) => self.ctx.read_csv(paths, o.schema(s)).await,
                            None if infer => self.ctx.read_csv(paths, o).await,
                            // Spark reads every column as a string unless told to infer
                            // (a zip code "02134" stays "02134"): the names are read,
                            // then the files as text.
                            None => {
                                let named = self
                                    .ctx
                                    .read_csv(paths.clone(), o.clone())
                                    .await
                                    .map_err(|e| path_error(e, &d.paths))?;
                                let text = datafusion::arrow::datatypes::Schema::new(
                                    named
                                        .schema()
                                        .fields()
                                        .iter()
                                        .map(|f| {
                                            datafusion::arrow::datatypes::Field::new(f.name(), DataType::Utf8, true)
                                        })
                                        .collect::<Vec<_>>(),
                                );
                                self.ctx.read_csv(paths, o.schema(&text)).await
                            }
                        }
                    }
                    "json" => {
                        let mut o = JsonReadOptions::default();
                        if let Some(s) = &schema {
                            o = o.schema(s);
                        }
                        self.ctx.read_json(paths, o).await
                    }
                    other => return Err(SparkError::unsupported(format!("the data source format {other:?}"))),
                };
                let df = df.map_err(|e| path_error(e, &d.paths))?;
                Ok(df.into_unoptimized_plan())
            }
        }
    }

    fn range(&self, r: &sc::Range) -> Result<LogicalPlan, SparkError> {
        let start = r.start.unwrap_or(0);
        if r.step == 0 {
            return Err(SparkError::invalid("spark.range with a step of 0"));
        }
        let step = r.step;
        let n = ((r.end as i128 - start as i128) + step as i128 - step.signum() as i128) / step as i128;
        if n > 10_000_000 {
            return Err(SparkError::unsupported("spark.range of more than 10 million rows"));
        }
        let range = datafusion::functions_nested::expr_fn::range(lit(start), lit(r.end), lit(step));
        let plan = LogicalPlanBuilder::empty(true)
            .project(vec![range.alias("id")])
            .and_then(|b| b.unnest_column("id"))
            .and_then(|b| b.build())
            .map_err(df_err)?;
        Ok(plan)
    }

    async fn aggregate(&self, a: &sc::Aggregate) -> Result<LogicalPlan, SparkError> {
        use sc::aggregate::GroupType;
        let input = self.input(&a.input).await?;
        match GroupType::try_from(a.group_type).unwrap_or(GroupType::Unspecified) {
            GroupType::Groupby | GroupType::Unspecified => {}
            other => return Err(SparkError::unsupported(format!("aggregation of type {}", other.as_str_name()))),
        }
        let schema = input.schema().clone();
        let mut group = Vec::new();
        for g in &a.grouping_expressions {
            let (e, name) = self.expr(g, &schema)?;
            group.push(named(e, &name));
        }
        let mut aggs = Vec::new();
        for x in &a.aggregate_expressions {
            let (e, name) = self.expr(x, &schema)?;
            aggs.push(named(e, &name));
        }
        LogicalPlanBuilder::from(input).aggregate(group, aggs).and_then(|b| b.build()).map_err(df_err)
    }

    fn project(&self, input: LogicalPlan, exprs: &[sc::Expression]) -> Result<LogicalPlan, SparkError> {
        let schema = input.schema().clone();
        let mut out = Vec::new();
        for x in exprs {
            if let Some(ExprType::UnresolvedStar(s)) = &x.expr_type {
                out.extend(star(&schema, s)?);
                continue;
            }
            // selectExpr("*") and selectExpr("t.*").
            if let Some(ExprType::ExpressionString(e)) = &x.expr_type {
                let t = e.expression.trim();
                if t == "*" || t.ends_with(".*") {
                    let target = (t != "*").then(|| t.to_string());
                    out.extend(star(&schema, &ex::UnresolvedStar { unparsed_target: target, plan_id: None })?);
                    continue;
                }
            }
            let (e, name) = self.expr(x, &schema)?;
            out.push(named(e, &name));
        }
        project_with_windows(input, out)
    }

    /// `f.over(window)`: a DataFusion window function with Spark's default frame (the
    /// whole partition without an order; from its start to the current row's peers with
    /// one).
    fn window(&self, w: &ex::Window, schema: &DFSchema) -> Result<(Expr, String), SparkError> {
        use datafusion::functions_window::expr_fn as wf;
        use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionDefinition};
        use datafusion::logical_expr::{ExprFunctionExt, WindowFrame, WindowFrameBound, WindowFrameUnits};
        let f = w.window_function.as_deref().ok_or_else(|| SparkError::invalid("a window without a function"))?;
        let Some(ExprType::UnresolvedFunction(uf)) = &f.expr_type else {
            return Err(SparkError::unsupported("this kind of window function"));
        };
        if uf.is_distinct {
            return Err(SparkError::unsupported("DISTINCT in a window function"));
        }
        let fname = uf.function_name.to_ascii_lowercase();
        let mut args = Vec::new();
        for a in &uf.arguments {
            args.push(self.expr(a, schema)?.0);
        }
        let int_arg = |i: usize, default: i64| -> Result<i64, SparkError> {
            match uf.arguments.get(i).and_then(|a| a.expr_type.as_ref()) {
                None => Ok(default),
                Some(ExprType::Literal(l)) => match &l.literal_type {
                    Some(ex::literal::LiteralType::Integer(v)) => Ok(*v as i64),
                    Some(ex::literal::LiteralType::Long(v)) => Ok(*v),
                    _ => Err(SparkError::unsupported(format!("{fname} with a non-integer argument {}", i + 1))),
                },
                Some(_) => Err(SparkError::unsupported(format!("{fname} with a computed argument {}", i + 1))),
            }
        };
        let base = match fname.as_str() {
            "row_number" => wf::row_number(),
            "rank" => wf::rank(),
            "dense_rank" => wf::dense_rank(),
            "percent_rank" => wf::percent_rank(),
            "cume_dist" => wf::cume_dist(),
            "ntile" => wf::ntile(lit(int_arg(0, 1)?)),
            "lag" | "lead" => {
                let value =
                    args.first().cloned().ok_or_else(|| SparkError::invalid(format!("{fname} needs a column")))?;
                let offset = int_arg(1, 1)?;
                let default = match uf.arguments.get(2).and_then(|a| a.expr_type.as_ref()) {
                    None => None,
                    Some(ExprType::Literal(l)) => match literal(l)?.0 {
                        Expr::Literal(v, _) if !v.is_null() => Some(v),
                        _ => None,
                    },
                    Some(_) => return Err(SparkError::unsupported(format!("{fname} with a computed default"))),
                };
                if fname == "lag" {
                    wf::lag(value, Some(offset), default)
                } else {
                    wf::lead(value, Some(offset), default)
                }
            }
            "sum" | "avg" | "mean" | "min" | "max" | "count" => {
                let name = if fname == "mean" { "avg" } else { fname.as_str() };
                let udaf = self
                    .ctx
                    .state()
                    .aggregate_functions()
                    .get(name)
                    .cloned()
                    .ok_or_else(|| SparkError::internal(format!("the aggregate {name} is not registered")))?;
                Expr::from(WindowFunction::new(WindowFunctionDefinition::AggregateUDF(udaf), args))
            }
            _ => return Err(SparkError::unsupported(format!("the window function {}", uf.function_name))),
        };
        let partition =
            w.partition_spec.iter().map(|p| self.expr(p, schema).map(|(e, _)| e)).collect::<Result<Vec<_>, _>>()?;
        let order = w.order_spec.iter().map(|o| self.sort_order(o, schema)).collect::<Result<Vec<_>, _>>()?;
        let frame = match &w.frame_spec {
            None => WindowFrame::new(if order.is_empty() { None } else { Some(false) }),
            Some(fs) => {
                use ex::window::window_frame::{frame_boundary::Boundary, FrameType};
                let units = match FrameType::try_from(fs.frame_type).unwrap_or(FrameType::Undefined) {
                    FrameType::Row => WindowFrameUnits::Rows,
                    FrameType::Range => WindowFrameUnits::Range,
                    FrameType::Undefined => return Err(SparkError::invalid("a window frame without a type")),
                };
                let bound = |b: &Option<Box<ex::window::window_frame::FrameBoundary>>,
                             lower: bool|
                 -> Result<WindowFrameBound, SparkError> {
                    let unbounded = ScalarValue::UInt64(None);
                    Ok(match b.as_ref().and_then(|b| b.boundary.as_ref()) {
                        None | Some(Boundary::Unbounded(_)) => {
                            if lower {
                                WindowFrameBound::Preceding(unbounded)
                            } else {
                                WindowFrameBound::Following(unbounded)
                            }
                        }
                        Some(Boundary::CurrentRow(_)) => WindowFrameBound::CurrentRow,
                        Some(Boundary::Value(v)) => {
                            if units != WindowFrameUnits::Rows {
                                return Err(SparkError::unsupported("rangeBetween with offsets"));
                            }
                            let n = match literal_i64(v) {
                                Some(n) => n,
                                None => {
                                    return Err(SparkError::unsupported("a window frame bound that is not an integer"))
                                }
                            };
                            match n {
                                0 => WindowFrameBound::CurrentRow,
                                n if n < 0 => WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n.unsigned_abs()))),
                                n => WindowFrameBound::Following(ScalarValue::UInt64(Some(n as u64))),
                            }
                        }
                    })
                };
                WindowFrame::new_bounds(units, bound(&fs.lower, true)?, bound(&fs.upper, false)?)
            }
        };
        let e = base.partition_by(partition).order_by(order).window_frame(frame).build().map_err(df_err)?;
        // Spark's ranks are int; DataFusion's unsigned 64-bit.
        let e = if matches!(fname.as_str(), "row_number" | "rank" | "dense_rank" | "ntile") {
            cast(e, DataType::Int32)
        } else {
            e
        };
        // Spark names an unnamed window column after its whole specification; Tarn asks
        // for a name instead (`.alias(...)`, or withColumn's).
        Ok((e, String::new()))
    }

    fn sort_order(&self, s: &ex::SortOrder, schema: &DFSchema) -> Result<SortExpr, SparkError> {
        use ex::sort_order::{NullOrdering, SortDirection};
        let child = s.child.as_deref().ok_or_else(|| SparkError::invalid("a sort order without an expression"))?;
        let (e, _) = self.expr(child, schema)?;
        let asc =
            SortDirection::try_from(s.direction).unwrap_or(SortDirection::Unspecified) != SortDirection::Descending;
        let nulls_first = match NullOrdering::try_from(s.null_ordering).unwrap_or(NullOrdering::SortNullsUnspecified) {
            NullOrdering::SortNullsFirst => true,
            NullOrdering::SortNullsLast => false,
            NullOrdering::SortNullsUnspecified => asc,
        };
        Ok(e.sort(asc, nulls_first))
    }

    /// An expression over `schema` and the name Spark gives its column.
    pub fn expr(&self, x: &sc::Expression, schema: &DFSchema) -> Result<(Expr, String), SparkError> {
        let Some(t) = &x.expr_type else { return Err(SparkError::invalid("an expression without a type")) };
        match t {
            ExprType::UnresolvedAttribute(a) => {
                // `df["x"]` names the DataFrame it came from: a join's side is known
                // by its plan id (see `join`).
                let side = a.plan_id.map(side_alias).and_then(|q| {
                    let ident = a.unparsed_identifier.replace('`', "");
                    let hits: Vec<Column> = schema
                        .iter()
                        .filter(|(t, f)| t.is_some_and(|t| t.table() == q) && f.name().eq_ignore_ascii_case(&ident))
                        .map(|(t, f)| Column::new(t.cloned(), f.name()))
                        .collect();
                    (hits.len() == 1).then(|| hits[0].clone())
                });
                let c = match side {
                    Some(c) => c,
                    None => resolve(schema, &a.unparsed_identifier)?,
                };
                // The column is named as the user spelled it (`select("ID")` gives `ID`),
                // as Spark names it.
                let ident = a.unparsed_identifier.replace('`', "");
                let spelled = ident.rsplit('.').next().unwrap_or(&ident);
                let name = if spelled.eq_ignore_ascii_case(&c.name) { spelled.to_string() } else { c.name.clone() };
                Ok((Expr::Column(c), name))
            }
            ExprType::Literal(l) => literal(l),
            ExprType::Alias(a) => {
                let inner = a.expr.as_deref().ok_or_else(|| SparkError::invalid("an alias without an expression"))?;
                let [name] = a.name.as_slice() else {
                    return Err(SparkError::unsupported("an alias of several names"));
                };
                let (e, _) = self.expr(inner, schema)?;
                Ok((e.alias(name), name.clone()))
            }
            ExprType::Cast(c) => {
                use ex::cast::{CastToType, EvalMode};
                if EvalMode::try_from(c.eval_mode).unwrap_or(EvalMode::Unspecified) == EvalMode::Try {
                    return Err(SparkError::unsupported("try_cast"));
                }
                let inner = c.expr.as_deref().ok_or_else(|| SparkError::invalid("a cast without an expression"))?;
                let (e, name) = self.expr(inner, schema)?;
                let (to, ty) = match &c.cast_to_type {
                    Some(CastToType::Type(t)) => (types::from_spark(t)?, format!("{:?}", t.kind)),
                    Some(CastToType::TypeStr(s)) => (types::from_ddl(s)?, s.to_ascii_uppercase()),
                    None => return Err(SparkError::invalid("a cast without a type")),
                };
                let ty = spark_type_name(&to).unwrap_or(ty);
                Ok((cast(e, to), format!("CAST({name} AS {ty})")))
            }
            ExprType::UnresolvedFunction(f) => self.function(f, schema),
            ExprType::Window(w) => self.window(w, schema),
            ExprType::ExpressionString(s) => match self.sql_expression(&s.expression, schema) {
                Ok(named) => Ok(named),
                Err(crate::sql::SqlError::Spark(e)) => Err(e),
                Err(crate::sql::SqlError::Untranslated(what)) => {
                    tracing::debug!(%what, "expression string: planned by DataFusion's SQL planner");
                    let e = self.ctx.parse_sql_expr(&s.expression, schema).map_err(df_err)?;
                    check_sql_expr(&e, schema)?;
                    Ok((e, s.expression.clone()))
                }
            },
            ExprType::UnresolvedStar(_) => Err(SparkError::unsupported("`*` outside a select or count")),
            ExprType::SortOrder(_) => Err(SparkError::invalid("a sort order outside a sort")),
            other => Err(SparkError::unsupported(format!("the expression {}", expression_name(other)))),
        }
    }

    /// The function the planning session knows by `name`.
    fn session_function(&self, name: &str) -> Result<Arc<datafusion::logical_expr::ScalarUDF>, SparkError> {
        self.ctx
            .state()
            .scalar_functions()
            .get(name)
            .cloned()
            .ok_or_else(|| SparkError::unsupported(format!("{name} (the session lacks it)")))
    }

    fn function(&self, f: &ex::UnresolvedFunction, schema: &DFSchema) -> Result<(Expr, String), SparkError> {
        let fname = f.function_name.to_ascii_lowercase();
        if f.is_user_defined_function {
            return Err(SparkError::unsupported(format!("the user-defined function {}", f.function_name)));
        }
        // count(*) counts rows: Spark names it count(1).
        if fname == "count"
            && matches!(f.arguments.as_slice(), [a] if matches!(a.expr_type, Some(ExprType::UnresolvedStar(_))))
        {
            return Ok((agg::count(lit(1i64)), "count(1)".into()));
        }
        let mut args = Vec::new();
        let mut names = Vec::new();
        for a in &f.arguments {
            let (e, n) = self.expr(a, schema)?;
            args.push(e);
            names.push(n);
        }
        let binary =
            |op: Operator, sym: &str, args: &mut Vec<Expr>, names: &[String]| -> Result<(Expr, String), SparkError> {
                if args.len() != 2 {
                    return Err(SparkError::invalid(format!("{sym} needs two arguments")));
                }
                let (r, l) = (args.pop().expect("two"), args.pop().expect("two"));
                Ok((datafusion::logical_expr::binary_expr(l, op, r), format!("({} {sym} {})", names[0], names[1])))
            };
        let distinct = if f.is_distinct { "DISTINCT " } else { "" };
        let call_name = match (fname.as_str(), names.as_slice()) {
            // Spark's own spellings of these.
            ("ceil" | "ceiling", _) => format!("CEIL({})", names.join(", ")),
            ("floor", _) => format!("FLOOR({})", names.join(", ")),
            ("round", [x]) => format!("round({x}, 0)"),
            _ => format!("{fname}({distinct}{})", names.join(", ")),
        };
        let one = |args: &mut Vec<Expr>| -> Result<Expr, SparkError> {
            if args.len() != 1 {
                return Err(SparkError::analysis(
                    "WRONG_NUM_ARGS.WITHOUT_SUGGESTION",
                    format!("{} takes one argument, not {}", f.function_name, args.len()),
                ));
            }
            Ok(args.pop().expect("one"))
        };
        let e = match fname.as_str() {
            "==" => return binary(Operator::Eq, "=", &mut args, &names),
            "<=>" => return binary(Operator::IsNotDistinctFrom, "<=>", &mut args, &names),
            "!=" => return binary(Operator::NotEq, "!=", &mut args, &names),
            "<" => return binary(Operator::Lt, "<", &mut args, &names),
            "<=" => return binary(Operator::LtEq, "<=", &mut args, &names),
            ">" => return binary(Operator::Gt, ">", &mut args, &names),
            ">=" => return binary(Operator::GtEq, ">=", &mut args, &names),
            "+" | "-" | "*" | "%" if args.len() == 2 => {
                decimal_literals(&mut args, schema)?;
                let op = match fname.as_str() {
                    "+" => Operator::Plus,
                    "-" => Operator::Minus,
                    "*" => Operator::Multiply,
                    _ => Operator::Modulo,
                };
                return binary(op, &fname, &mut args, &names);
            }
            "and" => return binary(Operator::And, "AND", &mut args, &names),
            "or" => return binary(Operator::Or, "OR", &mut args, &names),
            "/" => {
                // Spark divides in double unless an operand is a decimal; by zero it
                // gives NULL (spark.sql.ansi.enabled is false here).
                if args.len() != 2 {
                    return Err(SparkError::invalid("/ needs two arguments"));
                }
                decimal_literals(&mut args, schema)?;
                let mut decimal = false;
                let mut float = false;
                let mut types = Vec::new();
                for a in &args {
                    let t = a.get_type(schema).map_err(df_err)?;
                    decimal |= matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..));
                    float |= matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64);
                    types.push(t);
                }
                if decimal && !float {
                    return spark_decimal_divide(args, &types, &names);
                }
                if !decimal || float {
                    for a in args.iter_mut() {
                        *a = cast(a.clone(), DataType::Float64);
                    }
                }
                let zero = if decimal { lit(0i64) } else { lit(0f64) };
                let r = args.pop().expect("two");
                args.push(datafusion::functions::expr_fn::nullif(r, zero));
                return binary(Operator::Divide, "/", &mut args, &names);
            }
            "!" | "not" => return Ok((not(one(&mut args)?), format!("(NOT {})", names[0]))),
            "negative" | "-" => {
                return Ok((Expr::Negative(Box::new(one(&mut args)?)), format!("negative({})", names[0])))
            }
            "isnull" => return Ok((one(&mut args)?.is_null(), format!("({} IS NULL)", names[0]))),
            "isnotnull" => return Ok((one(&mut args)?.is_not_null(), format!("({} IS NOT NULL)", names[0]))),
            "in" => {
                if args.is_empty() {
                    return Err(SparkError::invalid("in needs a value"));
                }
                let v = args.remove(0);
                let name = format!("({} IN ({}))", names[0], names[1..].join(", "));
                return Ok((v.in_list(args, false), name));
            }
            "when" => {
                // when(c1, v1).when(c2, v2).otherwise(e): the branches take one type (as
                // Spark widens them), so the plan's schema is the one that runs.
                if args.len() < 2 {
                    return Err(SparkError::invalid("when needs a condition and a value"));
                }
                let otherwise = (args.len() % 2 == 1).then(|| args.pop().expect("odd"));
                let mut types = Vec::new();
                for v in args.iter().skip(1).step_by(2).chain(otherwise.iter()) {
                    types.push(v.get_type(schema).map_err(df_err)?);
                }
                let (then_types, else_type) = match otherwise {
                    Some(_) => (&types[..types.len() - 1], types.last()),
                    None => (&types[..], None),
                };
                // Where Spark's widening is not DataFusion's: a decimal beside a float is a
                // double in Spark; a string beside another type is refused (Spark casts the
                // other to a string, DataFusion the string to the other).
                let float = |t: &DataType| matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64);
                let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
                let typed: Vec<&DataType> = types.iter().filter(|t| **t != DataType::Null).collect();
                if typed.iter().any(|t| text(t)) && !typed.iter().all(|t| text(t)) {
                    return Err(SparkError::unsupported(format!(
                        "when/otherwise of strings and other types ({typed:?}): cast them to one type"
                    )));
                }
                let spark = (typed.iter().any(|t| float(t)) && typed.iter().any(|t| t.is_numeric()))
                    .then_some(DataType::Float64);
                let to = spark
                    .or_else(|| {
                        datafusion::logical_expr::type_coercion::other::get_coerce_type_for_case_expression(
                            then_types, else_type,
                        )
                    })
                    .ok_or_else(|| {
                        SparkError::analysis(
                            "DATATYPE_MISMATCH.DATA_DIFFERENT_TYPES",
                            format!("the values of when(...) have types that do not meet: {types:?}"),
                        )
                    })?;
                let mut pairs = Vec::new();
                let mut it = args.into_iter();
                while let (Some(c), Some(v)) = (it.next(), it.next()) {
                    pairs.push((Box::new(c), Box::new(cast_to(v, &to, schema)?)));
                }
                let otherwise = otherwise.map(|e| cast_to(e, &to, schema)).transpose()?.map(Box::new);
                let mut name = String::from("CASE");
                for p in names.chunks(2) {
                    if let [c, v] = p {
                        name.push_str(&format!(" WHEN {c} THEN {v}"));
                    } else {
                        name.push_str(&format!(" ELSE {}", p[0]));
                    }
                }
                name.push_str(" END");
                return Ok((Expr::Case(datafusion::logical_expr::Case::new(None, pairs, otherwise)), name));
            }
            "like" | "ilike" => {
                // Spark's LIKE escapes with `\\` unless told otherwise.
                let escape = match args.len() {
                    2 => '\\',
                    3 => match args.pop() {
                        Some(Expr::Literal(ScalarValue::Utf8(Some(c)), _)) if c.chars().count() == 1 => {
                            c.chars().next().expect("one")
                        }
                        _ => return Err(SparkError::unsupported("a LIKE escape that is not one character")),
                    },
                    _ => return Err(SparkError::invalid(format!("{fname} takes a value and a pattern"))),
                };
                let pattern = args.pop().expect("two");
                let value = args.pop().expect("two");
                let like = datafusion::logical_expr::Like::new(
                    false,
                    Box::new(value),
                    Box::new(pattern),
                    Some(escape),
                    fname == "ilike",
                );
                let op = if fname == "ilike" { "ILIKE" } else { "LIKE" };
                return Ok((Expr::Like(like), format!("{} {op} {}", names[0], names[1])));
            }
            "startswith" | "endswith" | "contains" => {
                if args.len() != 2 {
                    return Err(SparkError::invalid(format!("{fname} takes two arguments")));
                }
                let df = match fname.as_str() {
                    "startswith" => "starts_with",
                    "endswith" => "ends_with",
                    _ => "contains",
                };
                self.session_function(df)?.call(args)
            }
            "year" | "month" | "dayofmonth" | "day" | "quarter" => {
                // Of a date: a timestamp's fields depend on the session's time zone.
                let d = one(&mut args)?;
                let t = d.get_type(schema).map_err(df_err)?;
                if t != DataType::Date32 {
                    return Err(SparkError::unsupported(format!("{fname}() of a {t} (cast it to a date first)")));
                }
                let part = if fname == "dayofmonth" { "day" } else { fname.as_str() };
                cast(datafusion::functions::expr_fn::date_part(lit(part), d), DataType::Int32)
            }
            "to_date" => {
                // The session's time zone is UTC (other zones are refused), so a
                // timestamp's date is its UTC date; a string that is no date is NULL.
                if args.len() != 1 {
                    return Err(SparkError::unsupported("to_date with a format (Spark's patterns are Java's)"));
                }
                let d = one(&mut args)?;
                match d.get_type(schema).map_err(df_err)? {
                    DataType::Date32 => d,
                    DataType::Timestamp(..) => cast(d, DataType::Date32),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        datafusion::logical_expr::try_cast(d, DataType::Date32)
                    }
                    t => return Err(SparkError::unsupported(format!("to_date of a {t}"))),
                }
            }
            "dayofweek" => {
                // Spark's: 1 for Sunday to 7 for Saturday.
                let d = one(&mut args)?;
                let t = d.get_type(schema).map_err(df_err)?;
                if t != DataType::Date32 {
                    return Err(SparkError::unsupported(format!("dayofweek() of a {t} (cast it to a date first)")));
                }
                cast(datafusion::functions::expr_fn::date_part(lit("dow"), d) + lit(1), DataType::Int32)
            }
            "sum" if !f.is_distinct => agg::sum(one(&mut args)?),
            "count" if f.is_distinct => agg::count_distinct(one(&mut args)?),
            "count" => agg::count(one(&mut args)?),
            "avg" | "mean" if !f.is_distinct => {
                let x = one(&mut args)?;
                let t = x.get_type(schema).map_err(df_err)?;
                spark_avg(x, &t)?
            }
            "min" => agg::min(one(&mut args)?),
            "max" => agg::max(one(&mut args)?),
            // Sample statistics are NULL over one row, as Spark's (non-legacy) are.
            "stddev" | "stddev_samp" | "std" if !f.is_distinct => agg::stddev(one(&mut args)?),
            "stddev_pop" if !f.is_distinct => agg::stddev_pop(one(&mut args)?),
            "variance" | "var_samp" if !f.is_distinct => agg::var_sample(one(&mut args)?),
            "var_pop" if !f.is_distinct => agg::var_pop(one(&mut args)?),
            _ if f.is_distinct => {
                return Err(SparkError::unsupported(format!("{}(DISTINCT ...)", f.function_name)));
            }
            "round" if matches!(args.first().map(|a| a.get_type(schema)), Some(Ok(DataType::Decimal128(..)))) => {
                // Spark's type: decimal(p - s + 1 + min(s, d), min(s, d)) for d >= 0.
                let Some(Ok(DataType::Decimal128(p, s))) = args.first().map(|a| a.get_type(schema)) else {
                    return Err(SparkError::internal("round: the decimal went away"));
                };
                let d = match f.arguments.get(1) {
                    None => 0,
                    Some(a) => literal_i64(a).filter(|d| (0..=38).contains(d)).ok_or_else(|| {
                        SparkError::unsupported("round of a decimal to other than a literal scale of 0 to 38")
                    })?,
                } as i8;
                let scale = s.min(d);
                let precision = ((p as i32 - s as i32 + 1 + scale as i32).min(38)) as u8;
                let round = spark_function("round").expect("round is Spark's");
                cast(self.session_function(&round)?.call(args), DataType::Decimal128(precision, scale))
            }
            "round" => {
                // Of a double: Spark rounds its decimal text half up (2.675 to 2.68);
                // datafusion-spark its binary value (2.67). Tarn's function does Spark's.
                let t = args.first().map(|a| a.get_type(schema)).transpose().map_err(df_err)?;
                let d = match f.arguments.get(1) {
                    None => 0,
                    Some(a) => literal_i64(a)
                        .filter(|d| (-38..=38).contains(d))
                        .ok_or_else(|| SparkError::unsupported("round to other than a literal scale of -38 to 38"))?,
                } as i32;
                match t {
                    Some(DataType::Float64 | DataType::Float32) => {
                        let x = cast(args.swap_remove(0), DataType::Float64);
                        let r = self.session_function(tarn_jobs::functions::ROUND_DOUBLE)?.call(vec![x, lit(d)]);
                        if t == Some(DataType::Float32) {
                            cast(r, DataType::Float32)
                        } else {
                            r
                        }
                    }
                    // An integer has no places to lose.
                    Some(t) if t.is_integer() && d >= 0 => args.swap_remove(0),
                    other => {
                        return Err(SparkError::unsupported(format!(
                            "round of a {} to {d} places",
                            other.map(|t| t.to_string()).unwrap_or_default()
                        )))
                    }
                }
            }
            "date_trunc" if args.len() == 2 && matches!(args[1].get_type(schema), Ok(DataType::Date32)) => {
                // A date is truncated as the timestamp of its midnight (in UTC, the
                // session's zone), as Spark casts it.
                let d = args.pop().expect("two");
                let ts = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
                args.push(cast(d, ts));
                self.session_function(&spark_function("date_trunc").expect("Spark's"))?.call(args)
            }
            _ if spark_function(&fname).is_some() => {
                self.session_function(&spark_function(&fname).expect("known"))?.call(args)
            }
            _ => {
                let state = self.ctx.state();
                let same = SAME_AS_SPARK.contains(&fname.as_str());
                if let Some(u) = state.scalar_functions().get(&fname).filter(|_| same) {
                    u.call(args)
                } else {
                    return Err(SparkError::analysis_with(
                        "UNRESOLVED_ROUTINE",
                        format!("Cannot resolve routine `{}`: Tarn does not support it yet.", f.function_name),
                        "42883",
                        &[("routineName", format!("`{}`", f.function_name))],
                    ));
                }
            }
        };
        // avg over integers is a double in Spark; sum of them a bigint: DataFusion agrees.
        Ok((e, call_name))
    }
}

/// DataFusion functions whose results are Spark's for the same name and arguments. The
/// others (`concat` with a NULL, `substring` from a negative position, `log` of one
/// argument, `floor`'s type, ...) differ and are refused until they are Spark's.
pub const SAME_AS_SPARK: &[&str] =
    &["lower", "upper", "abs", "coalesce", "trim", "ltrim", "rtrim", "sqrt", "exp", "ln", "isnan", "greatest", "least"];

/// Spark's functions computed by `datafusion-spark` (registered as `spark_<its name>` in
/// every session of a job, [`tarn_jobs::functions`]): Spark's name, then the crate's.
/// Only those whose answers were checked against classic PySpark's are listed.
pub const SPARK_FUNCTIONS: &[(&str, &str)] = &[
    ("substring", "substring"),
    ("substr", "substring"),
    ("concat", "concat"),
    ("length", "length"),
    ("char_length", "length"),
    ("round", "round"),
    ("floor", "floor"),
    ("ceil", "ceil"),
    ("ceiling", "ceil"),
    ("date_add", "date_add"),
    ("date_sub", "date_sub"),
    ("datediff", "date_diff"),
    ("concat_ws", "concat_ws"),
    ("date_trunc", "date_trunc"),
];

/// The session's name (`spark_...`) of Spark's function `name`, if `datafusion-spark`
/// computes it.
pub fn spark_function(name: &str) -> Option<String> {
    SPARK_FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, f)| format!("{}{f}", tarn_jobs::functions::PREFIX))
}

/// `state` with Spark's functions of [`SPARK_FUNCTIONS`] under their Spark names too, so
/// that SQL (and `expr` strings) planned in it mean Spark's `substring`, not DataFusion's
/// (SQL's `SUBSTRING` syntax included: a planner of ours comes before DataFusion's).
pub fn with_spark_names(
    state: datafusion::execution::session_state::SessionState,
) -> Result<datafusion::execution::session_state::SessionState, SparkError> {
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::execution::FunctionRegistry;
    use datafusion::logical_expr::planner::ExprPlanner;
    let mut by_impl: Vec<(&str, Vec<&str>)> = Vec::new();
    for &(name, f) in SPARK_FUNCTIONS {
        match by_impl.iter_mut().find(|(g, _)| *g == f) {
            Some((_, names)) => names.push(name),
            None => by_impl.push((f, vec![name])),
        }
    }
    let mut udfs = Vec::new();
    for (f, names) in by_impl {
        let udf = tarn_jobs::functions::spark_function(f, &names)
            .ok_or_else(|| SparkError::unsupported(format!("Spark's {f} (datafusion-spark lacks it)")))?;
        udfs.push(udf);
    }
    let substring = udfs
        .iter()
        .find(|u| u.name() == format!("{}substring", tarn_jobs::functions::PREFIX))
        .cloned()
        .ok_or_else(|| SparkError::internal("Spark's substring is not registered"))?;
    let mut planners: Vec<Arc<dyn ExprPlanner>> = vec![Arc::new(SparkSubstring(substring))];
    planners.extend(state.expr_planners().iter().cloned());
    let mut state = SessionStateBuilder::new_from_existing(state).with_expr_planners(planners).build();
    for udf in udfs {
        state.register_udf(udf).map_err(df_err)?;
    }
    Ok(state)
}

/// Plans SQL's `SUBSTRING(s FROM p FOR n)` as Spark's substring.
#[derive(Debug)]
struct SparkSubstring(Arc<datafusion::logical_expr::ScalarUDF>);

impl datafusion::logical_expr::planner::ExprPlanner for SparkSubstring {
    fn plan_substring(
        &self,
        args: Vec<Expr>,
    ) -> datafusion::common::Result<datafusion::logical_expr::planner::PlannerResult<Vec<Expr>>> {
        Ok(datafusion::logical_expr::planner::PlannerResult::Planned(self.0.call(args)))
    }
}

/// `e` as type `to` (unchanged if it is of that type).
fn cast_to(e: Expr, to: &DataType, schema: &DFSchema) -> Result<Expr, SparkError> {
    if &e.get_type(schema).map_err(df_err)? == to {
        return Ok(e);
    }
    Ok(cast(e, to.clone()))
}

/// Spark's `avg(x)` of a column of type `t`. Of a decimal(p, s) it is the sum divided by
/// the count by Spark's decimal division, cast to decimal(p + 4, s + 4), rounding half up
/// (DataFusion's average truncates).
pub(crate) fn spark_avg(x: Expr, t: &DataType) -> Result<Expr, SparkError> {
    let DataType::Decimal128(p, s) = *t else { return Ok(agg::avg(x)) };
    let count_t = DataType::Decimal128(20, 0);
    let sum_t = DataType::Decimal128((p + 10).min(38), s);
    let parts = vec![agg::sum(x.clone()), cast(agg::count(x), count_t.clone())];
    let (q, _) = spark_decimal_divide(parts, &[sum_t, count_t], &[String::new(), String::new()])?;
    Ok(cast(q, DataType::Decimal128((p + 4).min(38), (s + 4).min(38))))
}

/// Spark's decimal division: the result is decimal(p, s) with
/// s = max(6, s1 + p2 + 1) and p = p1 - s1 + s2 + s (above 38 digits the scale gives way
/// down to 6), rounded half up. Arrow divides to s1 + 4 places, truncating: the dividend
/// is scaled so that one place more than s comes out, then the cast rounds.
fn spark_decimal_divide(
    mut args: Vec<Expr>,
    types: &[DataType],
    names: &[String],
) -> Result<(Expr, String), SparkError> {
    let as_decimal = |t: &DataType| -> Option<(i32, i32)> {
        Some(match t {
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => (*p as i32, *s as i32),
            DataType::Int8 | DataType::UInt8 => (3, 0),
            DataType::Int16 | DataType::UInt16 => (5, 0),
            DataType::Int32 | DataType::UInt32 => (10, 0),
            DataType::Int64 | DataType::UInt64 => (20, 0),
            _ => return None,
        })
    };
    let (Some((p1, s1)), Some((p2, s2))) = (as_decimal(&types[0]), as_decimal(&types[1])) else {
        return Err(SparkError::unsupported(format!("/ of {} and {}", types[0], types[1])));
    };
    let mut scale = 6.max(s1 + p2 + 1);
    let mut precision = p1 - s1 + s2 + scale;
    if precision > 38 {
        let int_digits = precision - scale;
        scale = (38 - int_digits).max(scale.min(6));
        precision = 38;
    }
    let s1x = s1.max(scale - 3);
    let p1x = p1 - s1 + s1x;
    if p1x > 38 {
        return Err(SparkError::unsupported(format!("/ of decimals this wide ({} / {})", types[0], types[1])));
    }
    let r = args.pop().expect("two");
    let l = args.pop().expect("two");
    let r = datafusion::functions::expr_fn::nullif(cast(r, DataType::Decimal128(p2 as u8, s2 as i8)), lit(0i64));
    let l = cast(l, DataType::Decimal128(p1x as u8, s1x as i8));
    let q = datafusion::logical_expr::binary_expr(l, Operator::Divide, r);
    Ok((cast(q, DataType::Decimal128(precision as u8, scale as i8)), format!("({} / {})", names[0], names[1])))
}

/// Beside a decimal, an integer literal is the decimal of its own digits, as Spark
/// types it (`amount / 3` is decimal(10,2) / decimal(1,0), giving decimal(16,6); an int
/// column would be a decimal(10,0)).
fn decimal_literals(args: &mut [Expr], schema: &DFSchema) -> Result<(), SparkError> {
    let mut decimal = false;
    for a in args.iter() {
        decimal |= matches!(a.get_type(schema).map_err(df_err)?, DataType::Decimal128(..));
    }
    if !decimal {
        return Ok(());
    }
    for a in args.iter_mut() {
        let v = match a {
            Expr::Literal(ScalarValue::Int8(Some(v)), _) => *v as i64,
            Expr::Literal(ScalarValue::Int16(Some(v)), _) => *v as i64,
            Expr::Literal(ScalarValue::Int32(Some(v)), _) => *v as i64,
            Expr::Literal(ScalarValue::Int64(Some(v)), _) => *v,
            _ => continue,
        };
        let digits = v.unsigned_abs().checked_ilog10().map_or(1, |d| d + 1) as u8;
        *a = lit(ScalarValue::Decimal128(Some(v as i128), digits, 0));
    }
    Ok(())
}

/// An integer literal's value.
fn literal_i64(e: &sc::Expression) -> Option<i64> {
    match e.expr_type.as_ref()? {
        ExprType::Literal(l) => match l.literal_type.as_ref()? {
            ex::literal::LiteralType::Integer(v) => Some(*v as i64),
            ex::literal::LiteralType::Long(v) => Some(*v),
            ex::literal::LiteralType::Short(v) | ex::literal::LiteralType::Byte(v) => Some(*v as i64),
            _ => None,
        },
        _ => None,
    }
}

/// A projection of `exprs` over `input`; window functions among them are computed by a
/// window node below it first (as DataFusion's SQL planner does).
pub(crate) fn project_with_windows(input: LogicalPlan, exprs: Vec<Expr>) -> Result<LogicalPlan, SparkError> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let windows = datafusion::logical_expr::utils::find_window_exprs(&exprs);
    if windows.is_empty() {
        return LogicalPlanBuilder::from(input).project(exprs).and_then(|b| b.build()).map_err(df_err);
    }
    for e in &exprs {
        if matches!(e, Expr::WindowFunction(_)) {
            return Err(SparkError::unsupported("a window function without a name (add .alias(...))"));
        }
    }
    let windowed = LogicalPlanBuilder::window_plan(input, windows.clone()).map_err(df_err)?;
    let exprs = exprs
        .into_iter()
        .map(|e| {
            e.transform_up(|x| {
                if windows.contains(&x) {
                    Ok(Transformed::yes(Expr::Column(Column::from_name(x.schema_name().to_string()))))
                } else {
                    Ok(Transformed::no(x))
                }
            })
            .map(|t| t.data)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(df_err)?;
    LogicalPlanBuilder::from(windowed).project(exprs).and_then(|b| b.build()).map_err(df_err)
}

/// A join `USING (names)`: each key once (the left's, the right's for a right join,
/// either for a full one), then the other columns of the left, then the right's.
pub(crate) fn join_using(
    left: LogicalPlan,
    right: LogicalPlan,
    jt: datafusion::common::JoinType,
    names: &[String],
) -> Result<LogicalPlan, SparkError> {
    use datafusion::common::JoinType as J;
    let mut on = Vec::new();
    let mut keys = Vec::new();
    for name in names {
        let l = resolve(left.schema(), name)?;
        let r = resolve(right.schema(), name)?;
        on.push(Expr::Column(l.clone()).eq(Expr::Column(r.clone())));
        keys.push((l, r));
    }
    let joined = LogicalPlanBuilder::from(left.clone())
        .join_on(right.clone(), jt, on)
        .and_then(|b| b.build())
        .map_err(df_err)?;
    if matches!(jt, J::LeftSemi | J::LeftAnti) {
        return Ok(joined);
    }
    let mut out = Vec::new();
    for (l, r) in &keys {
        let e = match jt {
            J::Right => Expr::Column(r.clone()),
            J::Full => datafusion::functions::expr_fn::coalesce(vec![Expr::Column(l.clone()), Expr::Column(r.clone())]),
            _ => Expr::Column(l.clone()),
        };
        out.push(e.alias(l.name.clone()));
    }
    out.extend(left.schema().columns().into_iter().filter(|c| !keys.iter().any(|(l, _)| l == c)).map(Expr::Column));
    out.extend(right.schema().columns().into_iter().filter(|c| !keys.iter().any(|(_, r)| r == c)).map(Expr::Column));
    LogicalPlanBuilder::from(joined).project(out).and_then(|b| b.build()).map_err(df_err)
}

/// The qualifier of a join side made from the relation of plan id `id`.
fn side_alias(id: i64) -> String {
    format!("__p{id}")
}

fn num_columns(l: usize, r: usize) -> SparkError {
    SparkError::analysis_with(
        "NUM_COLUMNS_MISMATCH",
        format!("UNION can only be performed on inputs with the same number of columns, but the first input has {l} columns and the second input has {r} columns."),
        "42826",
        &[("firstNumColumns", l.to_string()), ("invalidNumColumns", r.to_string())],
    )
}

/// Rows a `createDataFrame` may carry inline at most (a plan of literals); more belong in
/// files of the cluster.
const LOCAL_ROWS_MAX: usize = 50_000;

/// `spark.createDataFrame(...)`: the client's Arrow rows as literal rows.
fn local_relation(l: &sc::LocalRelation) -> Result<LogicalPlan, SparkError> {
    use datafusion::arrow::ipc::reader::StreamReader;
    let (schema, batches) = match l.data.as_deref().filter(|d| !d.is_empty()) {
        Some(data) => {
            let r = StreamReader::try_new(std::io::Cursor::new(data), None)
                .map_err(|e| SparkError::invalid(format!("the local relation's Arrow data: {e}")))?;
            let schema = r.schema();
            let batches = r
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SparkError::invalid(format!("the local relation's Arrow data: {e}")))?;
            (schema, batches)
        }
        None => {
            let s =
                l.schema.as_deref().ok_or_else(|| SparkError::invalid("a local relation without data or schema"))?;
            (Arc::new(json_or_ddl_schema(s)?), Vec::new())
        }
    };
    if schema.fields().is_empty() {
        // No columns (what a catalog statement answers): no rows.
        return LogicalPlanBuilder::empty(false).build().map_err(df_err);
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > LOCAL_ROWS_MAX {
        return Err(SparkError::unsupported(format!(
            "createDataFrame of more than {LOCAL_ROWS_MAX} rows ({rows}): write them to the cluster and read them"
        )));
    }
    let mut values = Vec::with_capacity(rows.max(1));
    for b in &batches {
        for i in 0..b.num_rows() {
            let row = b
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, i).map(lit))
                .collect::<Result<Vec<_>, _>>()
                .map_err(df_err)?;
            values.push(row);
        }
    }
    let empty = values.is_empty();
    if empty {
        // A row of typed NULLs, cut away: the columns keep their types.
        let row = schema
            .fields()
            .iter()
            .map(|f| ScalarValue::try_from(f.data_type()).map(lit))
            .collect::<Result<Vec<_>, _>>()
            .map_err(df_err)?;
        values.push(row);
    }
    let nullable = Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    let df_schema = Arc::new(DFSchema::try_from(nullable).map_err(df_err)?);
    let b = LogicalPlanBuilder::values_with_schema(values, &df_schema).map_err(df_err)?;
    let b = if empty { b.limit(0, Some(0)).map_err(df_err)? } else { b };
    let plan = b.build().map_err(df_err)?;
    // The columns as the client named them (a values node names its own `column1`, ...):
    // the schema sent beside the data, else the data's.
    let sent = l.schema.as_deref().and_then(|s| json_or_ddl_schema(s).ok());
    let names: Vec<String> = match sent.filter(|s| s.fields().len() == schema.fields().len()) {
        Some(s) => s.fields().iter().map(|f| f.name().clone()).collect(),
        None => schema.fields().iter().map(|f| f.name().clone()).collect(),
    };
    let exprs: Vec<Expr> =
        plan.schema().columns().into_iter().zip(names).map(|(c, n)| named(Expr::Column(c), &n)).collect();
    LogicalPlanBuilder::from(plan).project(exprs).and_then(|b| b.build()).map_err(df_err)
}

/// A Spark schema string: JSON (`StructType.json()`, what PySpark sends) or DDL.
fn json_or_ddl_schema(s: &str) -> Result<datafusion::arrow::datatypes::Schema, SparkError> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let t = s.trim();
    if !t.starts_with('{') {
        return ddl_schema(t);
    }
    let v: serde_json::Value =
        serde_json::from_str(t).map_err(|e| SparkError::parse(format!("the schema {s:?}: {e}")))?;
    let fields = v["fields"].as_array().ok_or_else(|| SparkError::parse(format!("the schema {s:?}: no fields")))?;
    let mut out = Vec::new();
    for f in fields {
        let name = f["name"].as_str().ok_or_else(|| SparkError::parse("a schema field without a name"))?;
        let ty = f["type"]
            .as_str()
            .ok_or_else(|| SparkError::unsupported(format!("the nested type of column {name} in a local relation")))?;
        out.push(Field::new(name, types::from_ddl(ty)?, f["nullable"].as_bool().unwrap_or(true)));
    }
    Ok(Schema::new(out))
}

/// `plan` with its subqueries (IN, EXISTS, scalar) made joins, as DataFusion's optimizer
/// makes them: a subquery expression does not travel to Ballista's scheduler.
fn decorrelate(
    plan: LogicalPlan,
    state: &datafusion::execution::session_state::SessionState,
) -> Result<LogicalPlan, SparkError> {
    use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
    use datafusion::optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
    use datafusion::optimizer::{Analyzer, Optimizer, OptimizerContext};
    let analyzed = Analyzer::new().execute_and_check(plan, state.config_options(), |_, _| {}).map_err(df_err)?;
    let rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
        vec![Arc::new(DecorrelatePredicateSubquery::new()), Arc::new(ScalarSubqueryToJoin::new())];
    Optimizer::with_rules(rules).optimize(analyzed, &OptimizerContext::new(), |_, _| {}).map_err(df_err)
}

/// Aggregates whose results are Spark's.
const SAME_AGGREGATES: &[&str] = &["sum", "count", "avg", "min", "max"];

/// Refuses what DataFusion's SQL would compute otherwise than Spark's: functions not
/// known to agree, and `/` of integers (DataFusion divides them as integers).
fn check_sql_plan(plan: &LogicalPlan) -> Result<(), SparkError> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut refused = None;
    let _ = plan.apply_with_subqueries(|node| {
        let inputs = node.inputs();
        let schema = match inputs.as_slice() {
            [one] => one.schema().clone(),
            _ => node.schema().clone(),
        };
        node.apply_expressions(|e| match check_sql_expr(e, &schema) {
            Ok(()) => Ok(TreeNodeRecursion::Continue),
            Err(x) => {
                refused = Some(x);
                Ok(TreeNodeRecursion::Stop)
            }
        })
    });
    refused.map_or(Ok(()), Err)
}

fn check_sql_expr(e: &Expr, schema: &DFSchema) -> Result<(), SparkError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut refused = None;
    let _ = e.apply(|x| {
        let why = match x {
            // Spark's round in SQL: its decimal type and a double's decimal text are the
            // DataFrame path's work (see `function`), not done here yet.
            Expr::ScalarFunction(f) if f.name() == format!("{}round", tarn_jobs::functions::PREFIX) => {
                Some("round in SQL (use the DataFrame API's round of a decimal)".to_string())
            }
            Expr::ScalarFunction(f)
                if !SAME_AS_SPARK.contains(&f.name())
                    && !SPARK_FUNCTIONS
                        .iter()
                        .any(|(_, g)| f.name().strip_prefix(tarn_jobs::functions::PREFIX).is_some_and(|n| n == *g)) =>
            {
                Some(format!("the function {} in SQL (its DataFusion meaning differs from Spark's)", f.name()))
            }
            Expr::AggregateFunction(a) if !SAME_AGGREGATES.contains(&a.func.name()) => {
                Some(format!("the aggregate {} in SQL", a.func.name()))
            }
            // DataFusion's average of decimals truncates where Spark's rounds.
            Expr::AggregateFunction(a)
                if a.func.name() == "avg"
                    && a.params.args.iter().any(|x| {
                        x.get_type(schema)
                            .is_ok_and(|t| matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)))
                    }) =>
            {
                Some("avg of a decimal in SQL (use the DataFrame API's avg, or cast to double)".to_string())
            }
            Expr::WindowFunction(_) => Some("window functions in SQL".to_string()),
            Expr::BinaryExpr(b) if b.op == Operator::Divide => {
                let float = |t: &Expr| {
                    t.get_type(schema).ok().is_some_and(|t| {
                        matches!(
                            t,
                            DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..)
                        )
                    })
                };
                (!float(&b.left) && !float(&b.right))
                    .then(|| "/ of integers in SQL (cast one side to double: Spark divides in double)".to_string())
            }
            _ => None,
        };
        match why {
            Some(w) => {
                refused = Some(SparkError::unsupported(w));
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    });
    refused.map_or(Ok(()), Err)
}

/// `e` named `name` (a bare column keeps its own name).
pub(crate) fn named(e: Expr, name: &str) -> Expr {
    match &e {
        _ if name.is_empty() => e,
        Expr::Column(c) if c.name == name => e,
        Expr::Alias(a) if a.name == name => e,
        _ => e.alias(name),
    }
}

/// The columns of `*` (or `alias.*`).
pub(crate) fn star(schema: &DFSchema, s: &ex::UnresolvedStar) -> Result<Vec<Expr>, SparkError> {
    let target = s.unparsed_target.as_deref().map(|t| t.trim_end_matches(".*").trim_matches('`'));
    let cols: Vec<Expr> = schema
        .iter()
        .filter(|(q, _)| match (target, q) {
            (None, _) => true,
            (Some(t), Some(q)) => q.table().eq_ignore_ascii_case(t),
            (Some(_), None) => false,
        })
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
        .collect();
    if cols.is_empty() {
        return Err(SparkError::analysis("CANNOT_RESOLVE_STAR_EXPAND", format!("cannot expand {target:?}.*")));
    }
    Ok(cols)
}

/// The column `ident` names in `schema`: exact first, then ignoring case (Spark's default),
/// and `alias.column` by its qualifier.
pub fn resolve(schema: &DFSchema, ident: &str) -> Result<Column, SparkError> {
    let ident_clean = ident.replace('`', "");
    let found = |name: &str, qual: Option<&str>| -> Vec<Column> {
        let mut exact = Vec::new();
        let mut folded = Vec::new();
        for (q, f) in schema.iter() {
            let q_ok = match qual {
                None => true,
                Some(want) => q.is_some_and(|q: &TableReference| q.table().eq_ignore_ascii_case(want)),
            };
            if !q_ok {
                continue;
            }
            if f.name() == name {
                exact.push(Column::new(q.cloned(), f.name()));
            } else if f.name().eq_ignore_ascii_case(name) {
                folded.push(Column::new(q.cloned(), f.name()));
            }
        }
        if exact.is_empty() {
            folded
        } else {
            exact
        }
    };
    let mut hits = found(&ident_clean, None);
    if hits.is_empty() {
        if let Some((q, n)) = ident_clean.rsplit_once('.') {
            hits = found(n, Some(q));
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => {
            let names: Vec<String> = schema.fields().iter().map(|f| format!("`{}`", f.name())).collect();
            Err(SparkError::analysis_with(
                "UNRESOLVED_COLUMN.WITH_SUGGESTION",
                format!(
                    "A column, variable, or function parameter with name `{ident_clean}` cannot be resolved. Did you mean one of the following? [{}].",
                    names.join(", ")
                ),
                "42703",
                &[("objectName", format!("`{ident_clean}`")), ("proposal", names.join(", "))],
            ))
        }
        _ => Err(SparkError::analysis_with(
            "AMBIGUOUS_REFERENCE",
            format!("Reference `{ident_clean}` is ambiguous."),
            "42704",
            &[("name", format!("`{ident_clean}`"))],
        )),
    }
}

fn literal(l: &ex::Literal) -> Result<(Expr, String), SparkError> {
    use ex::literal::LiteralType as L;
    let Some(t) = &l.literal_type else { return Err(SparkError::invalid("a literal without a value")) };
    let v = match t {
        L::Null(ty) => ScalarValue::try_from(&types::from_spark(ty)?).map_err(df_err)?,
        L::Binary(b) => ScalarValue::Binary(Some(b.to_vec())),
        L::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        L::Byte(v) => ScalarValue::Int8(Some(*v as i8)),
        L::Short(v) => ScalarValue::Int16(Some(*v as i16)),
        L::Integer(v) => ScalarValue::Int32(Some(*v)),
        L::Long(v) => ScalarValue::Int64(Some(*v)),
        L::Float(v) => ScalarValue::Float32(Some(*v)),
        L::Double(v) => ScalarValue::Float64(Some(*v)),
        L::Decimal(d) => decimal(d)?,
        L::String(s) => ScalarValue::Utf8(Some(s.clone())),
        L::Date(d) => ScalarValue::Date32(Some(*d)),
        L::Timestamp(us) => ScalarValue::TimestampMicrosecond(Some(*us), Some("UTC".into())),
        L::TimestampNtz(us) => ScalarValue::TimestampMicrosecond(Some(*us), None),
        _ => return Err(SparkError::unsupported("this kind of literal")),
    };
    let name = match &v {
        ScalarValue::Utf8(Some(s)) => s.clone(),
        v if v.is_null() => "NULL".into(),
        v => v.to_string(),
    };
    Ok((lit(v), name))
}

fn decimal(d: &ex::literal::Decimal) -> Result<ScalarValue, SparkError> {
    // As Spark's server reads it: the value's own digits decide, the type sent with it
    // (PySpark sends DecimalType()'s 10, 0 for any Decimal) only widens.
    let s = d.value.trim();
    let bad = || SparkError::invalid(format!("the decimal literal {s:?}"));
    if s.contains(['e', 'E']) {
        return Err(SparkError::unsupported(format!("decimal literals in exponent notation ({s})")));
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let own_scale = frac.len() as i32;
    let scale = own_scale.max(d.scale.unwrap_or(0));
    if scale > 38 {
        return Err(SparkError::unsupported(format!("decimal literals of more than 38 digits ({s})")));
    }
    let digits = format!("{int}{frac}");
    let unscaled: i128 = digits.parse().map_err(|_| bad())?;
    let unscaled =
        10i128.checked_pow((scale - own_scale) as u32).and_then(|m| unscaled.checked_mul(m)).ok_or_else(bad)?;
    let int_digits = int.trim_start_matches(['-', '+']).trim_start_matches('0').len() as i32;
    let precision = (int_digits + scale).max(d.precision.unwrap_or(0)).max(scale).max(1);
    if precision > 38 {
        return Err(SparkError::unsupported(format!("decimal literals of more than 38 digits ({s})")));
    }
    Ok(ScalarValue::Decimal128(Some(unscaled), precision as u8, scale as i8))
}

/// A schema from Spark's DDL string (`a INT, b STRING`), or a JSON struct type.
pub fn ddl_schema(s: &str) -> Result<datafusion::arrow::datatypes::Schema, SparkError> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let mut fields = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    for p in parts {
        let p = p.trim();
        let bad = || SparkError::parse(format!("the schema {s:?}"));
        let (name, ty) = match p.strip_prefix('`') {
            Some(rest) => rest.split_once('`').ok_or_else(bad)?,
            None => p.split_once(|c: char| c.is_whitespace() || c == ':').ok_or_else(bad)?,
        };
        let ty = ty.trim().trim_start_matches(':').trim().trim_end_matches("NOT NULL").trim();
        fields.push(Field::new(name, types::from_ddl(ty)?, true));
    }
    Ok(Schema::new(fields))
}

/// A read that failed: a missing path is Spark's PATH_NOT_FOUND.
fn path_error(e: datafusion::error::DataFusionError, paths: &[String]) -> SparkError {
    let msg = e.to_string();
    if msg.contains("not found")
        || msg.contains("NotFound")
        || msg.contains("No such")
        || msg.contains("does not exist")
    {
        let p = paths.join(", ");
        return SparkError::analysis_with(
            "PATH_NOT_FOUND",
            format!("Path does not exist: {p}."),
            "42K03",
            &[("path", p.clone())],
        );
    }
    SparkError::from_datafusion(e)
}

/// Spark's SQL name of a type, for column names such as `CAST(x AS BIGINT)`.
fn spark_type_name(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Utf8 => "STRING".into(),
        DataType::Binary => "BINARY".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP_NTZ".into(),
        _ => return None,
    })
}

/// A temp view, as a table the SQL planner and `spark.table` see.
pub fn view_table(plan: LogicalPlan) -> Arc<ViewTable> {
    Arc::new(ViewTable::new(plan, None))
}

/// The format of a write's `source` (parquet when unspecified, as Spark's default).
pub fn write_format(source: Option<&str>) -> Result<&'static str, SparkError> {
    let s = source.unwrap_or("parquet").to_ascii_lowercase();
    Ok(match s.as_str() {
        "parquet" => "parquet",
        "csv" => "csv",
        "json" => "json",
        other => return Err(SparkError::unsupported(format!("writing the format {other:?}"))),
    })
}

/// The file type a write of `format` (from [`write_format`]) produces, its options
/// (DataFusion's keys: `has_header`, `delimiter`, `compression`) inside it: a COPY's own
/// options do not survive the plan's trip to the session application.
pub fn file_type(
    format: &str,
    options: &[(String, String)],
) -> Result<Arc<dyn datafusion::common::file_options::file_type::FileType>, SparkError> {
    use datafusion::config::{ConfigField, CsvOptions, TableParquetOptions};
    let bad = |k: &str, e: datafusion::error::DataFusionError| {
        SparkError::invalid(format!("the {format} write option {k}: {e}"))
    };
    Ok(match format {
        "parquet" if options.is_empty() => format_as_file_type(Arc::new(ParquetFormatFactory::new())),
        "parquet" => {
            let mut o = TableParquetOptions::default();
            for (k, v) in options {
                o.set(k, v).map_err(|e| bad(k, e))?;
            }
            format_as_file_type(Arc::new(ParquetFormatFactory::new_with_options(o)))
        }
        "csv" => {
            let mut o = CsvOptions::default();
            for (k, v) in options {
                o.set(k, v).map_err(|e| bad(k, e))?;
            }
            format_as_file_type(Arc::new(CsvFormatFactory::new_with_options(o)))
        }
        "json" => format_as_file_type(Arc::new(JsonFormatFactory::new())),
        other => return Err(SparkError::unsupported(format!("writing the format {other:?}"))),
    })
}

/// The relation's name as Spark's protocol names it.
fn relation_name(r: &RelType) -> String {
    let d = format!("{r:?}");
    d.split('(').next().unwrap_or("?").to_string()
}

fn expression_name(e: &ExprType) -> String {
    let d = format!("{e:?}");
    d.split('(').next().unwrap_or("?").to_string()
}

/// The columns of `plan` as Spark's names (unused qualifiers dropped).
pub fn column_names(plan: &LogicalPlan) -> Vec<String> {
    plan.schema().fields().iter().map(|f| f.name().clone()).collect()
}

/// Registers the session's temp views in `ctx`.
pub fn register_views(ctx: &SessionContext, views: &HashMap<String, LogicalPlan>) -> Result<(), SparkError> {
    for (name, plan) in views {
        ctx.register_table(TableReference::bare(name.clone()), view_table(plan.clone())).map_err(df_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_the_cluster() {
        assert_eq!(resolve_path("s3://b/k/", "/user/a").unwrap(), "s3://b/k/");
        assert_eq!(resolve_path("/b/k", "/user/a").unwrap(), "tarn:///b/k");
        assert_eq!(resolve_path("out", "/user/a").unwrap(), "tarn:///user/a/out");
        assert!(resolve_path("hdfs://x/y", "/user/a").is_err());
    }

    #[test]
    fn decimals_keep_their_scale() {
        let d = ex::literal::Decimal { value: "12.50".into(), precision: Some(10), scale: Some(2) };
        assert_eq!(decimal(&d).unwrap(), ScalarValue::Decimal128(Some(1250), 10, 2));
        let d = ex::literal::Decimal { value: "-3".into(), precision: None, scale: None };
        assert_eq!(decimal(&d).unwrap(), ScalarValue::Decimal128(Some(-3), 1, 0));
        // PySpark's lit(Decimal("12.50")) comes typed decimal(10, 0).
        let d = ex::literal::Decimal { value: "12.50".into(), precision: Some(10), scale: Some(0) };
        assert_eq!(decimal(&d).unwrap(), ScalarValue::Decimal128(Some(1250), 10, 2));
        let d = ex::literal::Decimal { value: "10.5".into(), precision: Some(38), scale: Some(37) };
        assert!(decimal(&d).is_err(), "39 digits");
    }

    #[test]
    fn ddl_schemas_parse() {
        let s = ddl_schema("a INT, `b c` STRING, d decimal(10, 2)").unwrap();
        assert_eq!(s.field(1).name(), "b c");
        assert_eq!(s.field(2).data_type(), &DataType::Decimal128(10, 2));
    }
}
