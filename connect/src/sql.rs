//! Spark SQL: the queries of `spark.sql` and the expression strings of `expr`,
//! `selectExpr` and `filter("...")`, parsed in Spark's dialect and planned by the
//! DataFrame path ([`Planner::expr`]), so that SQL and DataFrame code mean the same:
//! backquoted names, double-quoted strings, `1.5` a decimal, columns found ignoring case,
//! Spark's output names (`sum(qty)`), `/` in double, Spark's decimal `avg` and `round`.
//!
//! A query is translated clause by clause: FROM (tables, views, CTEs, `parquet.`path``,
//! subqueries, joins of every kind with ON or USING), WHERE, GROUP BY (expressions,
//! select aliases, ordinals), HAVING, the select list with window functions, DISTINCT,
//! ORDER BY (the select list's names first, then the input's columns), LIMIT / OFFSET,
//! and UNION / INTERSECT / EXCEPT. What it does not translate (subqueries inside
//! expressions, VALUES, LATERAL VIEW, GROUPING SETS, ...) is [`SqlError::Untranslated`]:
//! the caller then plans the query with DataFusion's SQL planner and its checks.

use std::fmt::Display;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::utils::{expr_as_column_expr, find_aggregate_exprs};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, SortExpr};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::SparkSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use futures::future::BoxFuture;
use sc::expression::{self as ex, ExprType};
use spark_connect_proto::spark::connect as sc;

use crate::errors::SparkError;
use crate::plan::{df_err, named, resolve, star, Planner};

/// Why a query was not planned here.
#[derive(Debug)]
pub(crate) enum SqlError {
    /// Spark's answer: the query is wrong, or refers to what is not there.
    Spark(SparkError),
    /// A construct this translation does not know: DataFusion's SQL planner may.
    Untranslated(String),
}

impl From<SparkError> for SqlError {
    fn from(e: SparkError) -> Self {
        SqlError::Spark(e)
    }
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        SqlError::Spark(df_err(e))
    }
}

type R<T> = Result<T, SqlError>;

fn untranslated<T>(what: impl Display) -> R<T> {
    Err(SqlError::Untranslated(what.to_string()))
}

/// The CTEs in scope: name, plan.
type Ctes = Vec<(String, LogicalPlan)>;

/// Parses one Spark SQL query.
pub(crate) fn parse_query(sql: &str) -> Result<ast::Query, SparkError> {
    let stmts = Parser::parse_sql(&SparkSqlDialect {}, sql).map_err(|e| SparkError::parse(e.to_string()))?;
    match stmts.as_slice() {
        [ast::Statement::Query(q)] => Ok(q.as_ref().clone()),
        [_] => {
            let first = sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Err(SparkError::unsupported(format!("SQL statements other than queries ({first} ...)")))
        }
        _ => Err(SparkError::unsupported("several SQL statements in one spark.sql")),
    }
}

/// Parses an expression string (`"qty * 2 AS double_qty"`): the expression and its alias.
pub(crate) fn parse_expression(s: &str) -> Result<(ast::Expr, Option<String>), SparkError> {
    let err = |e: &dyn Display| SparkError::parse(format!("{e} in {s:?}"));
    let mut p = Parser::new(&SparkSqlDialect {}).try_with_sql(s).map_err(|e| err(&e))?;
    let item = p.parse_select_item().map_err(|e| err(&e))?;
    let next = p.next_token();
    if next.token != Token::EOF {
        return Err(err(&format!("unexpected {}", next.token)));
    }
    match item {
        ast::SelectItem::UnnamedExpr(e) => Ok((e, None)),
        ast::SelectItem::ExprWithAlias { expr, alias } => Ok((expr, Some(alias.value))),
        _ => Err(err(&"a star where an expression belongs")),
    }
}

impl Planner<'_> {
    /// The plan of a Spark SQL query.
    pub(crate) async fn spark_sql(&self, q: &ast::Query) -> R<LogicalPlan> {
        self.query(q, &Vec::new()).await
    }

    /// An expression string planned over `schema`, with Spark's name for it.
    pub(crate) fn sql_expression(&self, s: &str, schema: &DFSchema) -> R<(Expr, String)> {
        let (e, alias) = parse_expression(s)?;
        let x = to_spark(&e)?;
        let (e, name) = self.expr(&x, schema)?;
        Ok(match alias {
            Some(a) => (e.alias(&a), a),
            None => (e, name),
        })
    }

    fn query<'b>(&'b self, q: &'b ast::Query, outer: &'b Ctes) -> BoxFuture<'b, R<LogicalPlan>> {
        Box::pin(async move {
            if q.fetch.is_some()
                || !q.locks.is_empty()
                || q.for_clause.is_some()
                || q.settings.is_some()
                || q.format_clause.is_some()
                || !q.pipe_operators.is_empty()
            {
                return untranslated("FETCH, FOR, SETTINGS, FORMAT or a pipe");
            }
            let mut ctes = outer.clone();
            if let Some(w) = &q.with {
                if w.recursive {
                    return untranslated("WITH RECURSIVE");
                }
                for cte in &w.cte_tables {
                    let plan = self.query(&cte.query, &ctes).await?;
                    let plan = rename(plan, &cte.alias.columns)?;
                    let name = cte.alias.name.value.clone();
                    let plan = LogicalPlanBuilder::from(plan).alias(name.as_str())?.build()?;
                    ctes.push((name, plan));
                }
            }
            let order: &[ast::OrderByExpr] = match &q.order_by {
                None => &[],
                Some(o) => match &o.kind {
                    ast::OrderByKind::Expressions(v) => v,
                    ast::OrderByKind::All(_) => return untranslated("ORDER BY ALL"),
                },
            };
            let plan = match q.body.as_ref() {
                ast::SetExpr::Select(s) => self.select(s, order, &ctes).await?,
                other => {
                    let plan = self.set_expr(other, &ctes).await?;
                    self.sort_output(plan, order)?
                }
            };
            match &q.limit_clause {
                None => Ok(plan),
                Some(ast::LimitClause::LimitOffset { limit, offset, limit_by }) => {
                    if !limit_by.is_empty() {
                        return untranslated("LIMIT BY");
                    }
                    let skip = offset.as_ref().map(|o| count(&o.value, "OFFSET")).transpose()?.unwrap_or(0);
                    let fetch = limit.as_ref().map(|l| count(l, "LIMIT")).transpose()?;
                    Ok(LogicalPlanBuilder::from(plan).limit(skip, fetch)?.build()?)
                }
                Some(ast::LimitClause::OffsetCommaLimit { .. }) => untranslated("LIMIT offset, count"),
            }
        })
    }

    fn set_expr<'b>(&'b self, e: &'b ast::SetExpr, ctes: &'b Ctes) -> BoxFuture<'b, R<LogicalPlan>> {
        Box::pin(async move {
            match e {
                ast::SetExpr::Select(s) => self.select(s, &[], ctes).await,
                ast::SetExpr::Query(q) => self.query(q, ctes).await,
                ast::SetExpr::SetOperation { left, op, set_quantifier, right } => {
                    let l = self.set_expr(left, ctes).await?;
                    let r = self.set_expr(right, ctes).await?;
                    let (ln, rn) = (l.schema().fields().len(), r.schema().fields().len());
                    if ln != rn {
                        return Err(SparkError::analysis_with(
                            "NUM_COLUMNS_MISMATCH",
                            format!("{op} can only be performed on inputs with the same number of columns, but the first input has {ln} columns and the second input has {rn} columns."),
                            "42826",
                            &[("operator", op.to_string()), ("firstNumColumns", ln.to_string()), ("invalidNumColumns", rn.to_string())],
                        )
                        .into());
                    }
                    let all = match set_quantifier {
                        ast::SetQuantifier::All => true,
                        ast::SetQuantifier::Distinct | ast::SetQuantifier::None => false,
                        other => return untranslated(format!("{op} {other}")),
                    };
                    Ok(match op {
                        ast::SetOperator::Union if all => LogicalPlanBuilder::from(l).union(r)?.build()?,
                        ast::SetOperator::Union => LogicalPlanBuilder::from(l).union_distinct(r)?.build()?,
                        ast::SetOperator::Intersect => LogicalPlanBuilder::intersect(l, r, all)?,
                        ast::SetOperator::Except | ast::SetOperator::Minus => LogicalPlanBuilder::except(l, r, all)?,
                    })
                }
                other => untranslated(first_words(&other.to_string())),
            }
        })
    }

    /// The FROM clause: its tables, cross joined.
    async fn from(&self, from: &[ast::TableWithJoins], ctes: &Ctes) -> R<LogicalPlan> {
        let mut plan: Option<LogicalPlan> = None;
        for t in from {
            let mut p = self.table_factor(&t.relation, ctes).await?;
            for j in &t.joins {
                p = self.sql_join(p, j, ctes).await?;
            }
            plan = Some(match plan {
                None => p,
                Some(l) => LogicalPlanBuilder::from(l).cross_join(p)?.build()?,
            });
        }
        match plan {
            Some(p) => Ok(p),
            // SELECT without FROM: one row.
            None => Ok(LogicalPlanBuilder::empty(true).build()?),
        }
    }

    fn table_factor<'b>(&'b self, t: &'b ast::TableFactor, ctes: &'b Ctes) -> BoxFuture<'b, R<LogicalPlan>> {
        Box::pin(async move {
            let (plan, alias) = match t {
                ast::TableFactor::Table {
                    name,
                    alias,
                    args: None,
                    with_hints,
                    version: None,
                    with_ordinality: false,
                    partitions,
                    json_path: None,
                    sample: None,
                    index_hints,
                } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
                    let mut parts = Vec::new();
                    for p in &name.0 {
                        match p {
                            ast::ObjectNamePart::Identifier(i) => parts.push(i),
                            _ => return untranslated(format!("the table name {name}")),
                        }
                    }
                    let cte = match parts.as_slice() {
                        [one] => ctes.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(&one.value)),
                        _ => None,
                    };
                    let plan = match (cte, parts.as_slice()) {
                        (Some((_, plan)), _) => plan.clone(),
                        // SELECT * FROM parquet.`s3://bucket/path/`: the files themselves.
                        (None, [format, path])
                            if path.quote_style == Some('`')
                                && ["parquet", "csv", "json"].contains(&format.value.to_ascii_lowercase().as_str()) =>
                        {
                            let read = sc::read::ReadType::DataSource(sc::read::DataSource {
                                format: Some(format.value.to_ascii_lowercase()),
                                paths: vec![path.value.clone()],
                                ..Default::default()
                            });
                            self.read_relation(read).await?
                        }
                        (None, _) => {
                            let ident = parts.iter().map(|i| i.value.as_str()).collect::<Vec<_>>().join(".");
                            let read = sc::read::ReadType::NamedTable(sc::read::NamedTable {
                                unparsed_identifier: ident,
                                ..Default::default()
                            });
                            self.read_relation(read).await?
                        }
                    };
                    (plan, alias)
                }
                ast::TableFactor::Derived { lateral: false, subquery, alias, sample: None } => {
                    (self.query(subquery, ctes).await?, alias)
                }
                ast::TableFactor::NestedJoin { table_with_joins, alias } => {
                    let mut p = self.table_factor(&table_with_joins.relation, ctes).await?;
                    for j in &table_with_joins.joins {
                        p = self.sql_join(p, j, ctes).await?;
                    }
                    (p, alias)
                }
                other => return untranslated(first_words(&other.to_string())),
            };
            match alias {
                None => Ok(plan),
                Some(a) => {
                    let plan = rename(plan, &a.columns)?;
                    Ok(LogicalPlanBuilder::from(plan).alias(a.name.value.as_str())?.build()?)
                }
            }
        })
    }

    async fn read_relation(&self, read: sc::read::ReadType) -> R<LogicalPlan> {
        let rel = sc::Relation {
            common: None,
            rel_type: Some(sc::relation::RelType::Read(sc::Read { read_type: Some(read), ..Default::default() })),
        };
        Ok(self.relation(&rel).await?)
    }

    async fn sql_join(&self, left: LogicalPlan, j: &ast::Join, ctes: &Ctes) -> R<LogicalPlan> {
        use ast::JoinOperator as O;
        use datafusion::common::JoinType as J;
        let right = self.table_factor(&j.relation, ctes).await?;
        let (jt, c) = match &j.join_operator {
            O::Join(c) | O::Inner(c) | O::CrossJoin(c) => (J::Inner, c),
            O::Left(c) | O::LeftOuter(c) => (J::Left, c),
            O::Right(c) | O::RightOuter(c) => (J::Right, c),
            O::FullOuter(c) => (J::Full, c),
            O::Semi(c) | O::LeftSemi(c) => (J::LeftSemi, c),
            O::Anti(c) | O::LeftAnti(c) => (J::LeftAnti, c),
            _ => return untranslated("this kind of join"),
        };
        match c {
            ast::JoinConstraint::On(e) => {
                let both = left.schema().join(right.schema())?;
                let cond = self.sql_expr(e, &both)?;
                Ok(LogicalPlanBuilder::from(left).join_on(right, jt, [cond])?.build()?)
            }
            ast::JoinConstraint::Using(names) => {
                let names: Vec<String> = names.iter().map(|n| n.to_string().replace('`', "")).collect();
                Ok(crate::plan::join_using(left, right, jt, &names)?)
            }
            ast::JoinConstraint::None if jt == J::Inner => {
                Ok(LogicalPlanBuilder::from(left).cross_join(right)?.build()?)
            }
            ast::JoinConstraint::None => Err(SparkError::parse("an outer, semi or anti join needs ON or USING").into()),
            ast::JoinConstraint::Natural => untranslated("NATURAL JOIN"),
        }
    }

    fn sql_expr(&self, e: &ast::Expr, schema: &DFSchema) -> R<Expr> {
        Ok(self.expr(&to_spark(e)?, schema)?.0)
    }

    async fn select(&self, s: &ast::Select, order: &[ast::OrderByExpr], ctes: &Ctes) -> R<LogicalPlan> {
        if s.top.is_some()
            || s.into.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || !s.named_window.is_empty()
            || s.qualify.is_some()
            || s.exclude.is_some()
            || s.value_table_mode.is_some()
            || !s.optimizer_hints.is_empty()
            || s.select_modifiers.is_some()
            || !matches!(s.flavor, ast::SelectFlavor::Standard)
        {
            return untranslated(
                "a SELECT clause (LATERAL VIEW, CLUSTER BY, DISTRIBUTE BY, SORT BY, WINDOW, QUALIFY, hints)",
            );
        }
        let input = self.from(&s.from, ctes).await?;
        let input = match &s.selection {
            None => input,
            Some(w) => {
                let cond = self.sql_expr(w, input.schema())?;
                if !find_aggregate_exprs([&cond]).is_empty() {
                    return Err(SparkError::analysis_with(
                        "INVALID_WHERE_CONDITION",
                        format!("The WHERE condition {w} contains invalid expressions: aggregates. Rewrite the query to use HAVING."),
                        "42903",
                        &[("condition", w.to_string())],
                    )
                    .into());
                }
                LogicalPlanBuilder::from(input).filter(cond)?.build()?
            }
        };
        let schema = input.schema().clone();

        // The select list over the input, each with its Spark name.
        let mut items: Vec<(Expr, String)> = Vec::new();
        let mut aliases: Vec<(String, sc::Expression)> = Vec::new();
        for item in &s.projection {
            match item {
                ast::SelectItem::Wildcard(o) if plain_wildcard(o) => {
                    for e in star(&schema, &ex::UnresolvedStar::default())? {
                        let n = column_name(&e);
                        items.push((e, n));
                    }
                }
                ast::SelectItem::QualifiedWildcard(ast::SelectItemQualifiedWildcardKind::ObjectName(n), o)
                    if plain_wildcard(o) =>
                {
                    let target = ex::UnresolvedStar { unparsed_target: Some(format!("{n}.*")), ..Default::default() };
                    for e in star(&schema, &target)? {
                        let n = column_name(&e);
                        items.push((e, n));
                    }
                }
                ast::SelectItem::UnnamedExpr(e) => {
                    let x = to_spark(e)?;
                    items.push(self.expr(&x, &schema)?);
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    let x = to_spark(expr)?;
                    let (e, _) = self.expr(&x, &schema)?;
                    items.push((e, alias.value.clone()));
                    aliases.push((alias.value.clone(), x));
                }
                other => return untranslated(format!("the select item {other}")),
            }
        }

        // GROUP BY: expressions over the input, a select item's alias or its position.
        let mut groups: Vec<Expr> = Vec::new();
        match &s.group_by {
            ast::GroupByExpr::Expressions(es, modifiers) => {
                if !modifiers.is_empty() {
                    return untranslated("GROUP BY ... WITH ROLLUP / CUBE");
                }
                for g in es {
                    if let Some(i) = ordinal(g) {
                        let (e, _) = items.get(i.wrapping_sub(1)).ok_or_else(|| {
                            SparkError::analysis_with(
                                "GROUP_BY_POS_OUT_OF_RANGE",
                                format!(
                                    "GROUP BY position {i} is not in select list (valid range is [1, {}]).",
                                    items.len()
                                ),
                                "42805",
                                &[("index", i.to_string()), ("size", items.len().to_string())],
                            )
                        })?;
                        groups.push(e.clone());
                        continue;
                    }
                    if matches!(g, ast::Expr::GroupingSets(_) | ast::Expr::Cube(_) | ast::Expr::Rollup(_)) {
                        return untranslated("GROUPING SETS, CUBE and ROLLUP");
                    }
                    let x = with_aliases(&to_spark(g)?, &aliases, &schema);
                    groups.push(self.expr(&x, &schema)?.0);
                }
            }
            ast::GroupByExpr::All(_) => return untranslated("GROUP BY ALL"),
        }
        let having = match &s.having {
            None => None,
            Some(h) => Some(self.expr(&with_aliases(&to_spark(h)?, &aliases, &schema), &schema)?.0),
        };
        // ORDER BY terms that name the input (not the select list) may hold aggregates.
        let order_over_input: Vec<Option<Expr>> = order
            .iter()
            .map(|o| match ordinal(&o.expr) {
                Some(_) => None,
                None => to_spark(&o.expr).ok().and_then(|x| self.expr(&x, &schema).ok()).map(|(e, _)| e),
            })
            .collect();

        let aggs = find_aggregate_exprs(
            items.iter().map(|(e, _)| e).chain(having.iter()).chain(order_over_input.iter().flatten()),
        );
        let aggregating = !groups.is_empty() || !aggs.is_empty();
        let (base, rebase): (LogicalPlan, Box<dyn Fn(Expr) -> R<Expr> + '_>) = if aggregating {
            let agg = LogicalPlanBuilder::from(input).aggregate(groups.clone(), aggs.clone())?.build()?;
            let agg_for_rebase = agg.clone();
            let groups = groups.clone();
            let rebase = move |e: Expr| -> R<Expr> {
                let e = e
                    .transform_down(|x| {
                        if groups.contains(&x) || aggs.contains(&x) {
                            let c = expr_as_column_expr(&x, &agg_for_rebase)?;
                            Ok(Transformed::new(c, true, TreeNodeRecursion::Jump))
                        } else {
                            Ok(Transformed::no(x))
                        }
                    })?
                    .data;
                // What is left of the input's columns is neither grouped nor aggregated.
                let mut missing = None;
                e.apply(|x| {
                    if let Expr::Column(c) = x {
                        if !agg_for_rebase.schema().has_column(c) {
                            missing = Some(c.name.clone());
                            return Ok(TreeNodeRecursion::Stop);
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
                if let Some(c) = missing {
                    return Err(SparkError::analysis_with(
                        "MISSING_AGGREGATION",
                        format!("The non-aggregating expression `{c}` is based on columns which are not participating in the GROUP BY clause. Add the columns or the expression to the GROUP BY, aggregate the expression, or use `any_value({c})` if you do not care which of the values within a group is returned."),
                        "42803",
                        &[("expression", format!("`{c}`")), ("expressionAnyValue", format!("`any_value({c})`"))],
                    )
                    .into());
                }
                Ok(e)
            };
            let base = match having {
                Some(h) => LogicalPlanBuilder::from(agg).filter(rebase(h)?)?.build()?,
                None => agg,
            };
            (base, Box::new(rebase))
        } else {
            if having.is_some() {
                return untranslated("HAVING without an aggregate");
            }
            (input, Box::new(|e: Expr| -> R<Expr> { Ok(e) }))
        };

        let mut out = Vec::new();
        for (e, name) in items {
            out.push(named(rebase(e)?, &name));
        }
        let distinct = match &s.distinct {
            None | Some(ast::Distinct::All) => false,
            Some(ast::Distinct::Distinct) => true,
            Some(ast::Distinct::On(_)) => return untranslated("DISTINCT ON"),
        };
        let project = |exprs: Vec<Expr>| -> R<LogicalPlan> {
            let p = crate::plan::project_with_windows(base.clone(), exprs)?;
            Ok(if distinct { LogicalPlanBuilder::from(p).distinct()?.build()? } else { p })
        };
        let projected = project(out.clone())?;
        if order.is_empty() {
            return Ok(projected);
        }

        // ORDER BY: a position or a name of the select list first, else the input's.
        let mut sorts = Vec::new();
        let mut hidden = Vec::new();
        for (i, o) in order.iter().enumerate() {
            let (asc, nulls_first) = direction(o);
            let e = if let Some(n) = ordinal(&o.expr) {
                let c = projected.schema().columns().get(n.wrapping_sub(1)).cloned().ok_or_else(|| {
                    SparkError::analysis_with(
                        "ORDER_BY_POS_OUT_OF_RANGE",
                        format!("ORDER BY position {n} is not in select list (valid range is [1, {}]).", out.len()),
                        "42805",
                        &[("index", n.to_string()), ("size", out.len().to_string())],
                    )
                })?;
                Expr::Column(c)
            } else {
                let x = to_spark(&o.expr)?;
                // An aggregate names no column of the select list: it is the input's.
                match self.expr(&x, projected.schema()) {
                    Ok((e, _)) if find_aggregate_exprs([&e]).is_empty() => e,
                    planned => match &order_over_input[i] {
                        Some(e) if !distinct => {
                            let name = format!("__order{i}");
                            hidden.push(rebase(e.clone())?.alias(&name));
                            Expr::Column(Column::from_name(name))
                        }
                        Some(_) => {
                            return Err(SparkError::analysis(
                                "MISSING_ATTRIBUTES.RESOLVED_ATTRIBUTE_APPEAR_IN_OPERATION",
                                format!("ORDER BY {} names a column that SELECT DISTINCT does not keep.", o.expr),
                            )
                            .into())
                        }
                        None => {
                            return Err(planned.err().map(SqlError::Spark).unwrap_or_else(|| {
                                SqlError::Spark(SparkError::analysis(
                                    "MISSING_AGGREGATION",
                                    format!("ORDER BY {} is neither grouped nor aggregated.", o.expr),
                                ))
                            }))
                        }
                    },
                }
            };
            sorts.push(SortExpr::new(e, asc, nulls_first));
        }
        if hidden.is_empty() {
            return Ok(LogicalPlanBuilder::from(projected).sort(sorts)?.build()?);
        }
        let visible: Vec<Expr> = projected.schema().columns().into_iter().map(Expr::Column).collect();
        let mut wide = out;
        wide.extend(hidden);
        let sorted = LogicalPlanBuilder::from(project(wide)?).sort(sorts)?.build()?;
        Ok(LogicalPlanBuilder::from(sorted).project(visible)?.build()?)
    }

    /// ORDER BY over a query's output (a set operation's).
    fn sort_output(&self, plan: LogicalPlan, order: &[ast::OrderByExpr]) -> R<LogicalPlan> {
        if order.is_empty() {
            return Ok(plan);
        }
        let mut sorts = Vec::new();
        for o in order {
            let (asc, nulls_first) = direction(o);
            let e = match ordinal(&o.expr) {
                Some(n) => Expr::Column(plan.schema().columns().get(n.wrapping_sub(1)).cloned().ok_or_else(|| {
                    SparkError::analysis(
                        "ORDER_BY_POS_OUT_OF_RANGE",
                        format!("ORDER BY position {n} is not in the select list."),
                    )
                })?),
                None => self.sql_expr(&o.expr, plan.schema())?,
            };
            sorts.push(SortExpr::new(e, asc, nulls_first));
        }
        Ok(LogicalPlanBuilder::from(plan).sort(sorts)?.build()?)
    }
}

/// Spark's defaults: ascending; nulls first when ascending, last when descending.
fn direction(o: &ast::OrderByExpr) -> (bool, bool) {
    let asc = o.options.asc.unwrap_or(true);
    (asc, o.options.nulls_first.unwrap_or(asc))
}

fn plain_wildcard(o: &ast::WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}

fn column_name(e: &Expr) -> String {
    match e {
        Expr::Column(c) => c.name.clone(),
        other => other.schema_name().to_string(),
    }
}

/// An integer literal of GROUP BY / ORDER BY: a position in the select list.
fn ordinal(e: &ast::Expr) -> Option<usize> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, false) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// LIMIT's or OFFSET's count.
fn count(e: &ast::Expr, what: &str) -> R<usize> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse().map_err(|_| {
                SparkError::analysis(
                    "INVALID_LIMIT_LIKE_EXPRESSION.IS_NEGATIVE",
                    format!("The {what} {n} is not a count of rows."),
                )
                .into()
            }),
            _ => untranslated(format!("{what} {e}")),
        },
        _ => untranslated(format!("{what} {e}")),
    }
}

/// `plan` with its columns named `columns` (`AS t(a, b)`).
fn rename(plan: LogicalPlan, columns: &[ast::TableAliasColumnDef]) -> R<LogicalPlan> {
    if columns.is_empty() {
        return Ok(plan);
    }
    let have = plan.schema().columns();
    if have.len() != columns.len() {
        return Err(SparkError::analysis(
            "ASSIGNMENT_ARITY_MISMATCH",
            format!("{} column names for {} columns", columns.len(), have.len()),
        )
        .into());
    }
    let exprs: Vec<Expr> = have.into_iter().zip(columns).map(|(c, n)| Expr::Column(c).alias(&n.name.value)).collect();
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// `x` with the select list's aliases in place of names the input lacks (Spark lets
/// GROUP BY and HAVING name them).
fn with_aliases(x: &sc::Expression, aliases: &[(String, sc::Expression)], schema: &DFSchema) -> sc::Expression {
    let mut out = x.clone();
    match &mut out.expr_type {
        Some(ExprType::UnresolvedAttribute(a)) if resolve(schema, &a.unparsed_identifier).is_err() => {
            let want = a.unparsed_identifier.replace('`', "");
            if let Some((_, e)) = aliases.iter().find(|(n, _)| n.eq_ignore_ascii_case(&want)) {
                return e.clone();
            }
        }
        Some(ExprType::UnresolvedFunction(f)) => {
            for a in f.arguments.iter_mut() {
                *a = with_aliases(a, aliases, schema);
            }
        }
        Some(ExprType::Cast(c)) => {
            if let Some(inner) = c.expr.as_deref() {
                c.expr = Some(Box::new(with_aliases(inner, aliases, schema)));
            }
        }
        Some(ExprType::Alias(a)) => {
            if let Some(inner) = a.expr.as_deref() {
                a.expr = Some(Box::new(with_aliases(inner, aliases, schema)));
            }
        }
        _ => {}
    }
    out
}

fn first_words(s: &str) -> String {
    let w: Vec<&str> = s.split_whitespace().take(4).collect();
    format!("{} ...", w.join(" "))
}

fn expression(t: ExprType) -> sc::Expression {
    sc::Expression { common: None, expr_type: Some(t) }
}

fn attribute(name: String) -> sc::Expression {
    expression(ExprType::UnresolvedAttribute(ex::UnresolvedAttribute {
        unparsed_identifier: name,
        ..Default::default()
    }))
}

fn call(name: &str, args: Vec<sc::Expression>) -> sc::Expression {
    expression(ExprType::UnresolvedFunction(ex::UnresolvedFunction {
        function_name: name.to_string(),
        arguments: args,
        ..Default::default()
    }))
}

fn literal(t: ex::literal::LiteralType) -> sc::Expression {
    expression(ExprType::Literal(ex::Literal { literal_type: Some(t), ..Default::default() }))
}

fn string(s: &str) -> sc::Expression {
    literal(ex::literal::LiteralType::String(s.to_string()))
}

fn cast_to(x: sc::Expression, ty: String) -> sc::Expression {
    cast_as(x, ty, ex::cast::EvalMode::Unspecified)
}

fn cast_as(x: sc::Expression, ty: String, mode: ex::cast::EvalMode) -> sc::Expression {
    expression(ExprType::Cast(Box::new(ex::Cast {
        expr: Some(Box::new(x)),
        cast_to_type: Some(ex::cast::CastToType::TypeStr(ty)),
        eval_mode: mode as i32,
    })))
}

/// A number as Spark reads it: an integer is an int, a bigint, then a decimal as it
/// grows; with a point, a decimal of its own digits; with an exponent, a double.
fn number(s: &str, long: bool) -> R<sc::Expression> {
    use ex::literal::LiteralType as L;
    let bad = || SqlError::Spark(SparkError::parse(format!("the number {s}")));
    if long {
        return Ok(literal(L::Long(s.parse().map_err(|_| bad())?)));
    }
    if s.contains(['e', 'E']) {
        return Ok(literal(L::Double(s.parse().map_err(|_| bad())?)));
    }
    if !s.contains('.') {
        if let Ok(v) = s.parse::<i32>() {
            return Ok(literal(L::Integer(v)));
        }
        if let Ok(v) = s.parse::<i64>() {
            return Ok(literal(L::Long(v)));
        }
    }
    Ok(literal(L::Decimal(ex::literal::Decimal { value: s.to_string(), precision: None, scale: None })))
}

/// A Spark SQL expression as the Spark Connect expression PySpark would send for it.
pub(crate) fn to_spark(e: &ast::Expr) -> R<sc::Expression> {
    use ast::Expr as E;
    use ex::literal::LiteralType as L;
    let boxed = |e: &ast::Expr| to_spark(e);
    Ok(match e {
        E::Identifier(i) => attribute(ident(i)),
        E::CompoundIdentifier(parts) => attribute(parts.iter().map(ident).collect::<Vec<_>>().join(".")),
        E::Nested(inner) => to_spark(inner)?,
        E::Value(v) => match &v.value {
            ast::Value::Number(n, long) => number(n, *long)?,
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => string(s),
            ast::Value::Boolean(b) => literal(L::Boolean(*b)),
            ast::Value::Null => {
                literal(L::Null(sc::DataType { kind: Some(sc::data_type::Kind::Null(Default::default())) }))
            }
            other => return untranslated(format!("the literal {other}")),
        },
        E::TypedString(t) => match &t.value.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
                cast_to(string(s), t.data_type.to_string())
            }
            _ => return untranslated(format!("the literal {e}")),
        },
        E::UnaryOp { op, expr } => match op {
            ast::UnaryOperator::Not | ast::UnaryOperator::BangNot => call("not", vec![boxed(expr)?]),
            ast::UnaryOperator::Plus => boxed(expr)?,
            ast::UnaryOperator::Minus => match expr.as_ref() {
                E::Value(v) => match &v.value {
                    ast::Value::Number(n, long) => number(&format!("-{n}"), *long)?,
                    _ => call("negative", vec![boxed(expr)?]),
                },
                _ => call("negative", vec![boxed(expr)?]),
            },
            other => return untranslated(format!("the operator {other}")),
        },
        E::BinaryOp { left, op, right } => {
            use ast::BinaryOperator as B;
            let name = match op {
                B::Plus => "+",
                B::Minus => "-",
                B::Multiply => "*",
                B::Divide => "/",
                B::Modulo => "%",
                B::Gt => ">",
                B::Lt => "<",
                B::GtEq => ">=",
                B::LtEq => "<=",
                B::Eq => "==",
                B::NotEq => "!=",
                B::And => "and",
                B::Or => "or",
                B::Spaceship => "<=>",
                B::StringConcat => "concat",
                other => return untranslated(format!("the operator {other}")),
            };
            call(name, vec![boxed(left)?, boxed(right)?])
        }
        E::IsNull(x) => call("isnull", vec![boxed(x)?]),
        E::IsNotNull(x) => call("isnotnull", vec![boxed(x)?]),
        E::IsNotDistinctFrom(a, b) => call("<=>", vec![boxed(a)?, boxed(b)?]),
        E::IsDistinctFrom(a, b) => call("not", vec![call("<=>", vec![boxed(a)?, boxed(b)?])]),
        E::InList { expr, list, negated } => {
            let mut args = vec![boxed(expr)?];
            for x in list {
                args.push(boxed(x)?);
            }
            negate(call("in", args), *negated)
        }
        E::Between { expr, negated, low, high } => {
            let x = boxed(expr)?;
            let both = call("and", vec![call(">=", vec![x.clone(), boxed(low)?]), call("<=", vec![x, boxed(high)?])]);
            negate(both, *negated)
        }
        E::Like { negated, any: false, expr, pattern, escape_char }
        | E::ILike { negated, any: false, expr, pattern, escape_char } => {
            let name = if matches!(e, E::Like { .. }) { "like" } else { "ilike" };
            let mut args = vec![boxed(expr)?, boxed(pattern)?];
            match escape_char.as_ref().map(|v| &v.value) {
                None => {}
                Some(ast::Value::SingleQuotedString(c)) => args.push(string(c)),
                Some(other) => return untranslated(format!("the LIKE escape {other}")),
            }
            negate(call(name, args), *negated)
        }
        E::Case { operand, conditions, else_result, .. } => {
            let mut args = Vec::new();
            for w in conditions {
                let cond = boxed(&w.condition)?;
                let cond = match operand {
                    Some(o) => call("==", vec![boxed(o)?, cond]),
                    None => cond,
                };
                args.push(cond);
                args.push(boxed(&w.result)?);
            }
            if let Some(x) = else_result {
                args.push(boxed(x)?);
            }
            call("when", args)
        }
        E::Cast { kind, expr, data_type, array: false, format: None } => {
            let mode = match kind {
                ast::CastKind::Cast | ast::CastKind::DoubleColon => ex::cast::EvalMode::Unspecified,
                ast::CastKind::TryCast | ast::CastKind::SafeCast => ex::cast::EvalMode::Try,
            };
            cast_as(boxed(expr)?, data_type.to_string(), mode)
        }
        E::Extract { field, expr, .. } => {
            let name = match field {
                ast::DateTimeField::Year => "year",
                ast::DateTimeField::Quarter => "quarter",
                ast::DateTimeField::Month => "month",
                ast::DateTimeField::Day => "dayofmonth",
                other => return untranslated(format!("EXTRACT({other} FROM ...)")),
            };
            call(name, vec![boxed(expr)?])
        }
        E::Ceil { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) } => {
            call("ceil", vec![boxed(expr)?])
        }
        E::Floor { expr, field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime) } => {
            call("floor", vec![boxed(expr)?])
        }
        E::Substring { expr, substring_from, substring_for, .. } => {
            let mut args = vec![boxed(expr)?];
            args.push(match substring_from {
                Some(f) => boxed(f)?,
                None => literal(L::Integer(1)),
            });
            if let Some(n) = substring_for {
                args.push(boxed(n)?);
            }
            call("substring", args)
        }
        E::Trim { trim_where: None, trim_what: None, expr, trim_characters: None } => call("trim", vec![boxed(expr)?]),
        E::Function(f) => function(f)?,
        E::Wildcard(_) => expression(ExprType::UnresolvedStar(Default::default())),
        other => return untranslated(first_words(&other.to_string())),
    })
}

fn negate(x: sc::Expression, negated: bool) -> sc::Expression {
    if negated {
        call("not", vec![x])
    } else {
        x
    }
}

/// A name as written: a backquoted one keeps its quotes (its dots are its own).
fn ident(i: &ast::Ident) -> String {
    match i.quote_style {
        Some(_) if i.value.contains('.') => format!("`{}`", i.value),
        _ => i.value.clone(),
    }
}

fn function(f: &ast::Function) -> R<sc::Expression> {
    let [ast::ObjectNamePart::Identifier(name)] = f.name.0.as_slice() else {
        return untranslated(format!("the function {}", f.name));
    };
    if f.filter.is_some() || f.null_treatment.is_some() || !f.within_group.is_empty() || f.uses_odbc_syntax {
        return untranslated(format!("{f}"));
    }
    if !matches!(f.parameters, ast::FunctionArguments::None) {
        return untranslated(format!("{f}"));
    }
    let mut distinct = false;
    let mut args = Vec::new();
    match &f.args {
        ast::FunctionArguments::None => {}
        ast::FunctionArguments::Subquery(_) => return untranslated(format!("{f}")),
        ast::FunctionArguments::List(l) => {
            if !l.clauses.is_empty() {
                return untranslated(format!("{f}"));
            }
            distinct = matches!(l.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct));
            for a in &l.args {
                match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => args.push(to_spark(e)?),
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard) => {
                        args.push(expression(ExprType::UnresolvedStar(Default::default())))
                    }
                    _ => return untranslated(format!("{f}")),
                }
            }
        }
    }
    let lower = name.value.to_ascii_lowercase();
    // Spark's names for what the DataFrame API spells otherwise.
    let fname = match lower.as_str() {
        "if" => "when",
        "nvl" | "ifnull" => "coalesce",
        other => other,
    };
    let x = expression(ExprType::UnresolvedFunction(ex::UnresolvedFunction {
        function_name: fname.to_string(),
        arguments: args,
        is_distinct: distinct,
        ..Default::default()
    }));
    match &f.over {
        None => Ok(x),
        Some(ast::WindowType::NamedWindow(w)) => untranslated(format!("the named window {w}")),
        Some(ast::WindowType::WindowSpec(spec)) => {
            if spec.window_name.is_some() {
                return untranslated("a window built on a named window");
            }
            let mut partition = Vec::new();
            for p in &spec.partition_by {
                partition.push(to_spark(p)?);
            }
            let mut order = Vec::new();
            for o in &spec.order_by {
                order.push(sort_order(o)?);
            }
            let frame = match &spec.window_frame {
                None => None,
                Some(fr) => Some(Box::new(frame(fr)?)),
            };
            Ok(expression(ExprType::Window(Box::new(ex::Window {
                window_function: Some(Box::new(x)),
                partition_spec: partition,
                order_spec: order,
                frame_spec: frame,
            }))))
        }
    }
}

fn sort_order(o: &ast::OrderByExpr) -> R<ex::SortOrder> {
    use ex::sort_order::{NullOrdering, SortDirection};
    let (asc, nulls_first) = direction(o);
    Ok(ex::SortOrder {
        child: Some(Box::new(to_spark(&o.expr)?)),
        direction: if asc { SortDirection::Ascending } else { SortDirection::Descending } as i32,
        null_ordering: if nulls_first { NullOrdering::SortNullsFirst } else { NullOrdering::SortNullsLast } as i32,
    })
}

fn frame(f: &ast::WindowFrame) -> R<ex::window::WindowFrame> {
    use ex::window::window_frame::{frame_boundary::Boundary, FrameBoundary, FrameType};
    let units = match f.units {
        ast::WindowFrameUnits::Rows => FrameType::Row,
        ast::WindowFrameUnits::Range => FrameType::Range,
        ast::WindowFrameUnits::Groups => return untranslated("GROUPS frames"),
    };
    let bound = |b: &ast::WindowFrameBound| -> R<FrameBoundary> {
        let b = match b {
            ast::WindowFrameBound::CurrentRow => Boundary::CurrentRow(true),
            ast::WindowFrameBound::Preceding(None) | ast::WindowFrameBound::Following(None) => {
                Boundary::Unbounded(true)
            }
            ast::WindowFrameBound::Preceding(Some(n)) => {
                let x = match n.as_ref() {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::Number(s, long) => number(&format!("-{s}"), *long)?,
                        _ => return untranslated(format!("the frame bound {n}")),
                    },
                    _ => return untranslated(format!("the frame bound {n}")),
                };
                Boundary::Value(Box::new(x))
            }
            ast::WindowFrameBound::Following(Some(n)) => Boundary::Value(Box::new(to_spark(n)?)),
        };
        Ok(FrameBoundary { boundary: Some(b) })
    };
    let upper = match &f.end_bound {
        Some(b) => bound(b)?,
        None => FrameBoundary { boundary: Some(Boundary::CurrentRow(true)) },
    };
    Ok(ex::window::WindowFrame {
        frame_type: units as i32,
        lower: Some(Box::new(bound(&f.start_bound)?)),
        upper: Some(Box::new(upper)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spark(sql: &str) -> sc::Expression {
        to_spark(&parse_expression(sql).expect("parses").0).expect("translates")
    }

    #[test]
    fn double_quotes_are_strings_and_backquotes_names() {
        let x = spark(r#"`Customer ID` = "gold""#);
        let Some(ExprType::UnresolvedFunction(f)) = x.expr_type else { panic!("a call: {x:?}") };
        assert_eq!(f.function_name, "==");
        assert!(
            matches!(&f.arguments[0].expr_type, Some(ExprType::UnresolvedAttribute(a)) if a.unparsed_identifier == "Customer ID")
        );
        assert!(
            matches!(&f.arguments[1].expr_type, Some(ExprType::Literal(l)) if l.literal_type == Some(ex::literal::LiteralType::String("gold".into())))
        );
    }

    #[test]
    fn numbers_are_typed_as_spark_types_them() {
        use ex::literal::LiteralType as L;
        let lit = |s: &str| match spark(s).expr_type {
            Some(ExprType::Literal(l)) => l.literal_type.expect("a value"),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(lit("7"), L::Integer(7));
        assert_eq!(lit("-7"), L::Integer(-7));
        assert_eq!(lit("3000000000"), L::Long(3_000_000_000));
        assert!(matches!(lit("1.50"), L::Decimal(d) if d.value == "1.50"));
        assert_eq!(lit("1.5e2"), L::Double(150.0));
    }

    #[test]
    fn an_alias_and_trailing_words_are_told_apart() {
        assert_eq!(parse_expression("qty * 2 AS double_qty").expect("parses").1.as_deref(), Some("double_qty"));
        assert!(parse_expression("qty * 2 AS a b").is_err());
    }

    #[test]
    fn statements_are_not_queries() {
        let e = parse_query("INSERT INTO t SELECT 1").expect_err("refused");
        assert_eq!(e.error_class, "UNSUPPORTED_FEATURE");
        assert!(parse_query("SELECT 1; SELECT 2").is_err());
        assert!(parse_query("SELECT FROM WHERE").is_err());
    }
}
