//! Spark SQL's catalog statements, which `spark.sql` runs at once (they are not queries):
//!
//! - `CREATE {DATABASE|SCHEMA} [IF NOT EXISTS] db [COMMENT 'c'] [LOCATION 'url']`,
//!   `DROP {DATABASE|SCHEMA} [IF EXISTS] db [RESTRICT|CASCADE]`, `SHOW {DATABASES|SCHEMAS}
//!   [[LIKE] 'pattern']`, `USE [DATABASE] db`;
//! - `CREATE [EXTERNAL] TABLE [IF NOT EXISTS] [db.]t [(col type [NOT NULL] [COMMENT 'c'],
//!   ...)] [USING fmt | STORED AS PARQUET] [OPTIONS (k 'v', ...)] [PARTITIONED BY (c, ...)]
//!   [LOCATION 'url'] [COMMENT 'c'] [TBLPROPERTIES (...)] [AS query]` (clauses in any
//!   order, as Spark takes them), `CREATE OR REPLACE TABLE ... AS query`;
//! - `DROP TABLE [IF EXISTS] [db.]t [PURGE]`, `DROP VIEW [IF EXISTS] v` (temp views),
//!   `SHOW TABLES [{IN|FROM} db] [[LIKE] 'pattern']`, `{DESCRIBE|DESC} [TABLE] [EXTENDED]
//!   [db.]t`;
//! - `CREATE [OR REPLACE] {TEMP|TEMPORARY} VIEW v AS query`;
//! - `MSCK REPAIR TABLE t`, `ALTER TABLE t RECOVER PARTITIONS`, `REFRESH TABLE t`: nothing
//!   to do (partitions are found when a table is read), once the table is found.
//!
//! Anything else is left to the query path ([`parse`] answers `None`).

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::errors::SparkError;

/// `[db.]name`, lower-cased as Spark's catalog keeps names (quoted parts as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub db: Option<String>,
    pub name: String,
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.db {
            Some(db) => write!(f, "`{db}`.`{}`", self.name),
            None => write!(f, "`{}`", self.name),
        }
    }
}

/// One column of `CREATE TABLE t (...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTable {
    pub name: Option<Name>,
    pub if_not_exists: bool,
    pub or_replace: bool,
    pub external: bool,
    pub columns: Option<Vec<ColumnDef>>,
    pub provider: Option<String>,
    pub options: BTreeMap<String, String>,
    pub partitioned_by: Vec<String>,
    pub location: Option<String>,
    pub comment: Option<String>,
    /// `AS query`: the query's text.
    pub query: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    CreateDatabase {
        name: String,
        if_not_exists: bool,
        comment: Option<String>,
        location: Option<String>,
    },
    DropDatabase {
        name: String,
        if_exists: bool,
        cascade: bool,
    },
    ShowDatabases {
        pattern: Option<String>,
    },
    Use {
        name: String,
    },
    CreateTable(CreateTable),
    DropTable {
        name: Name,
        if_exists: bool,
    },
    DropView {
        name: String,
        if_exists: bool,
    },
    ShowTables {
        db: Option<String>,
        pattern: Option<String>,
    },
    Describe {
        name: Name,
        extended: bool,
    },
    CreateTempView {
        name: String,
        replace: bool,
        query: String,
    },
    /// MSCK REPAIR / RECOVER PARTITIONS / REFRESH: the table must exist.
    Refresh {
        name: Name,
    },
}

struct Toks<'a> {
    sql: &'a str,
    /// Byte offset in `sql` of each line's start.
    lines: Vec<usize>,
    toks: Vec<TokenWithSpan>,
    at: usize,
}

fn err(what: impl std::fmt::Display) -> SparkError {
    SparkError::parse(what.to_string())
}

impl<'a> Toks<'a> {
    fn new(sql: &'a str) -> Result<Toks<'a>, SparkError> {
        let toks = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().map_err(err)?;
        let toks =
            toks.into_iter().filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF)).collect::<Vec<_>>();
        let mut lines = vec![0];
        lines.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Ok(Toks { sql, lines, toks, at: 0 })
    }

    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at).map(|t| &t.token)
    }

    /// Whether the next token is the keyword `kw` (consumed if so).
    fn kw(&mut self, kw: &str) -> bool {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn kws(&mut self, kws: &[&str]) -> bool {
        let start = self.at;
        if kws.iter().all(|k| self.kw(k)) {
            return true;
        }
        self.at = start;
        false
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SparkError> {
        if self.kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn unexpected(&self, wanted: &str) -> SparkError {
        match self.peek() {
            Some(t) => err(format!("expected {wanted}, found '{t}'")),
            None => err(format!("expected {wanted} at the end of the statement")),
        }
    }

    fn token(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: Token) -> Result<(), SparkError> {
        if self.token(&t) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{t}'")))
        }
    }

    /// An identifier (unquoted: lower-cased).
    fn ident(&mut self) -> Result<String, SparkError> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let v = if w.quote_style.is_some() { w.value.clone() } else { w.value.to_ascii_lowercase() };
                self.at += 1;
                Ok(v)
            }
            _ => Err(self.unexpected("a name")),
        }
    }

    fn name(&mut self) -> Result<Name, SparkError> {
        let first = self.ident()?;
        if self.token(&Token::Period) {
            let second = self.ident()?;
            if self.peek() == Some(&Token::Period) {
                return Err(err("names of more than two parts (catalog.db.table) are not supported"));
            }
            return Ok(Name { db: Some(first), name: second });
        }
        Ok(Name { db: None, name: first })
    }

    fn string(&mut self) -> Result<String, SparkError> {
        match self.peek() {
            Some(Token::SingleQuotedString(s) | Token::DoubleQuotedString(s)) => {
                let s = s.clone();
                self.at += 1;
                Ok(s)
            }
            // Spark reads "..." as a string; this tokenizer as a quoted name.
            Some(Token::Word(w)) if w.quote_style == Some('"') => {
                let s = w.value.clone();
                self.at += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("a quoted string")),
        }
    }

    fn end(&mut self) -> Result<(), SparkError> {
        self.token(&Token::SemiColon);
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.unexpected("the end of the statement")),
        }
    }

    /// The text from the current token to the end.
    fn rest(&self) -> Result<String, SparkError> {
        let t = self.toks.get(self.at).ok_or_else(|| err("a query is missing after AS"))?;
        let loc = t.span.start;
        let line_start = *self.lines.get(loc.line.saturating_sub(1) as usize).unwrap_or(&0);
        let offset = self.sql[line_start..]
            .char_indices()
            .nth(loc.column.saturating_sub(1) as usize)
            .map(|(i, _)| line_start + i)
            .unwrap_or(self.sql.len());
        Ok(self.sql[offset..].trim().trim_end_matches(';').to_string())
    }

    /// `(k [=] 'v', ...)`.
    fn properties(&mut self) -> Result<BTreeMap<String, String>, SparkError> {
        self.expect(Token::LParen)?;
        let mut out = BTreeMap::new();
        loop {
            let key = match self.peek() {
                Some(Token::SingleQuotedString(_) | Token::DoubleQuotedString(_)) => self.string()?,
                _ => {
                    let mut k = self.ident()?;
                    while self.token(&Token::Period) {
                        k = format!("{k}.{}", self.ident()?);
                    }
                    k
                }
            };
            self.token(&Token::Eq);
            let value = match self.peek() {
                Some(Token::Number(n, _)) => {
                    let n = n.clone();
                    self.at += 1;
                    n
                }
                Some(Token::Word(w)) if w.quote_style.is_none() => {
                    let v = w.value.clone();
                    self.at += 1;
                    v
                }
                _ => self.string()?,
            };
            out.insert(key, value);
            if !self.token(&Token::Comma) {
                break;
            }
        }
        self.expect(Token::RParen)?;
        Ok(out)
    }

    /// A column type as written (`decimal(10, 2)` becomes `decimal(10,2)`).
    fn data_type(&mut self) -> Result<String, SparkError> {
        let mut t = self.ident()?.to_ascii_lowercase();
        if self.token(&Token::LParen) {
            let mut args = Vec::new();
            loop {
                match self.peek() {
                    Some(Token::Number(n, _)) => {
                        args.push(n.clone());
                        self.at += 1;
                    }
                    _ => return Err(self.unexpected("a number")),
                }
                if !self.token(&Token::Comma) {
                    break;
                }
            }
            self.expect(Token::RParen)?;
            t = format!("{t}({})", args.join(","));
        }
        if matches!(self.peek(), Some(Token::Lt)) {
            return Err(SparkError::unsupported(format!("columns of type {t}<...> in tables")));
        }
        Ok(t)
    }
}

/// The catalog statement `sql` is, `None` if it is not one (a query, or a statement the
/// query path refuses).
pub fn parse(sql: &str) -> Result<Option<Stmt>, SparkError> {
    let mut t = Toks::new(sql)?;
    let stmt = if t.kw("CREATE") {
        let or_replace = t.kws(&["OR", "REPLACE"]);
        if t.kw("DATABASE") || t.kw("SCHEMA") || t.kw("NAMESPACE") {
            if or_replace {
                return Err(err("CREATE OR REPLACE DATABASE"));
            }
            let if_not_exists = t.kws(&["IF", "NOT", "EXISTS"]);
            let name = t.ident()?;
            let (mut comment, mut location) = (None, None);
            loop {
                if t.kw("COMMENT") {
                    comment = Some(t.string()?);
                } else if t.kw("LOCATION") {
                    location = Some(t.string()?);
                } else if t.kws(&["WITH", "DBPROPERTIES"]) || t.kws(&["WITH", "PROPERTIES"]) {
                    t.properties()?;
                } else {
                    break;
                }
            }
            t.end()?;
            Stmt::CreateDatabase { name, if_not_exists, comment, location }
        } else if t.kw("TEMP") || t.kw("TEMPORARY") {
            t.expect_kw("VIEW")?;
            let name = t.ident()?;
            t.expect_kw("AS")?;
            Stmt::CreateTempView { name, replace: or_replace, query: t.rest()? }
        } else if t.kw("GLOBAL") {
            return Err(SparkError::unsupported("global temporary views"));
        } else if t.kw("VIEW") {
            return Err(SparkError::unsupported("permanent views (CREATE TEMPORARY VIEW is supported)"));
        } else {
            let external = t.kw("EXTERNAL");
            if !t.kw("TABLE") {
                if or_replace || external {
                    return Err(t.unexpected("TABLE"));
                }
                return Ok(None);
            }
            Stmt::CreateTable(create_table(&mut t, or_replace, external)?)
        }
    } else if t.kw("DROP") {
        if t.kw("DATABASE") || t.kw("SCHEMA") || t.kw("NAMESPACE") {
            let if_exists = t.kws(&["IF", "EXISTS"]);
            let name = t.ident()?;
            let cascade = t.kw("CASCADE");
            if !cascade {
                t.kw("RESTRICT");
            }
            t.end()?;
            Stmt::DropDatabase { name, if_exists, cascade }
        } else if t.kw("TABLE") {
            let if_exists = t.kws(&["IF", "EXISTS"]);
            let name = t.name()?;
            t.kw("PURGE");
            t.end()?;
            Stmt::DropTable { name, if_exists }
        } else if t.kw("VIEW") {
            let if_exists = t.kws(&["IF", "EXISTS"]);
            let name = t.name()?;
            if name.db.is_some() {
                return Err(SparkError::unsupported("permanent views (DROP VIEW drops temp views)"));
            }
            t.end()?;
            Stmt::DropView { name: name.name, if_exists }
        } else {
            return Ok(None);
        }
    } else if t.kw("SHOW") {
        if t.kw("DATABASES") || t.kw("SCHEMAS") || t.kw("NAMESPACES") {
            t.kw("LIKE");
            let pattern = if t.peek().is_some_and(|p| *p != Token::SemiColon) { Some(t.string()?) } else { None };
            t.end()?;
            Stmt::ShowDatabases { pattern }
        } else if t.kw("TABLES") {
            let db = if t.kw("IN") || t.kw("FROM") { Some(t.ident()?) } else { None };
            t.kw("LIKE");
            let pattern = if t.peek().is_some_and(|p| *p != Token::SemiColon) { Some(t.string()?) } else { None };
            t.end()?;
            Stmt::ShowTables { db, pattern }
        } else {
            return Ok(None);
        }
    } else if t.kw("USE") {
        let _ = t.kw("DATABASE") || t.kw("SCHEMA") || t.kw("NAMESPACE");
        let name = t.ident()?;
        t.end()?;
        Stmt::Use { name }
    } else if t.kw("DESCRIBE") || t.kw("DESC") {
        if t.kw("QUERY") || t.kw("DATABASE") || t.kw("SCHEMA") || t.kw("FUNCTION") || t.kw("CATALOG") {
            return Err(SparkError::unsupported(format!("DESCRIBE {}", sql.split_whitespace().nth(1).unwrap_or(""))));
        }
        if matches!(t.peek(), Some(Token::Word(w)) if ["SELECT", "WITH", "FROM", "VALUES"].iter().any(|k| w.value.eq_ignore_ascii_case(k)))
        {
            return Err(SparkError::unsupported("DESCRIBE of a query"));
        }
        t.kw("TABLE");
        let extended = t.kw("EXTENDED") || t.kw("FORMATTED");
        let name = t.name()?;
        if t.peek().is_some_and(|p| *p != Token::SemiColon) {
            return Err(SparkError::unsupported("DESCRIBE of a column or partition"));
        }
        t.end()?;
        Stmt::Describe { name, extended }
    } else if t.kws(&["MSCK", "REPAIR", "TABLE"]) || t.kws(&["REFRESH", "TABLE"]) {
        let name = t.name()?;
        let _ = t.kws(&["ADD", "PARTITIONS"]) || t.kws(&["SYNC", "PARTITIONS"]);
        t.end()?;
        Stmt::Refresh { name }
    } else if t.kws(&["ALTER", "TABLE"]) {
        let name = t.name()?;
        if !t.kws(&["RECOVER", "PARTITIONS"]) {
            return Err(SparkError::unsupported("ALTER TABLE other than RECOVER PARTITIONS"));
        }
        t.end()?;
        Stmt::Refresh { name }
    } else {
        return Ok(None);
    };
    Ok(Some(stmt))
}

/// A table name as `saveAsTable` and `spark.catalog` take it (`t`, `db.t`, quoted parts).
pub fn table_name(s: &str) -> Result<Name, SparkError> {
    let mut t = Toks::new(s)?;
    let name = t.name()?;
    t.end()?;
    Ok(name)
}

fn create_table(t: &mut Toks<'_>, or_replace: bool, external: bool) -> Result<CreateTable, SparkError> {
    let mut c = CreateTable { or_replace, external, ..Default::default() };
    c.if_not_exists = t.kws(&["IF", "NOT", "EXISTS"]);
    if c.if_not_exists && or_replace {
        return Err(err("CREATE OR REPLACE TABLE IF NOT EXISTS"));
    }
    c.name = Some(t.name()?);
    if t.token(&Token::LParen) {
        let mut cols = Vec::new();
        loop {
            let name = t.ident()?;
            let data_type = t.data_type()?;
            let mut nullable = true;
            loop {
                if t.kws(&["NOT", "NULL"]) {
                    nullable = false;
                } else if t.kw("COMMENT") {
                    t.string()?;
                } else {
                    break;
                }
            }
            cols.push(ColumnDef { name, data_type, nullable });
            if !t.token(&Token::Comma) {
                break;
            }
        }
        t.expect(Token::RParen)?;
        c.columns = Some(cols);
    }
    loop {
        if t.kw("USING") {
            c.provider = Some(t.ident()?.to_ascii_lowercase());
        } else if t.kws(&["STORED", "AS"]) {
            let f = t.ident()?.to_ascii_lowercase();
            if f != "parquet" {
                return Err(SparkError::unsupported(format!("Hive tables STORED AS {f} (USING csv or json instead)")));
            }
            c.provider = Some(f);
        } else if t.kw("OPTIONS") {
            c.options.extend(t.properties()?);
        } else if t.kws(&["PARTITIONED", "BY"]) {
            t.expect(Token::LParen)?;
            loop {
                let name = t.ident()?;
                if matches!(t.peek(), Some(Token::Word(_))) {
                    return Err(SparkError::unsupported(
                        "typed columns in PARTITIONED BY (name partition columns among the table's columns)",
                    ));
                }
                c.partitioned_by.push(name);
                if !t.token(&Token::Comma) {
                    break;
                }
            }
            t.expect(Token::RParen)?;
        } else if t.kw("LOCATION") {
            c.location = Some(t.string()?);
        } else if t.kw("COMMENT") {
            c.comment = Some(t.string()?);
        } else if t.kw("TBLPROPERTIES") {
            t.properties()?;
        } else if t.kws(&["CLUSTERED", "BY"]) || t.kws(&["SORTED", "BY"]) || t.kws(&["CLUSTER", "BY"]) {
            return Err(SparkError::unsupported("bucketed or clustered tables"));
        } else if t.kw("AS") {
            c.query = Some(t.rest()?);
            return Ok(c);
        } else {
            break;
        }
    }
    t.end()?;
    Ok(c)
}

/// Whether `name` matches Spark's SHOW pattern: `*` any characters, `|` alternatives,
/// case-insensitive.
pub fn like(pattern: &str, name: &str) -> bool {
    fn glob(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| glob(rest, &n[i..])),
            Some((c, rest)) => n.first().is_some_and(|m| m.eq_ignore_ascii_case(c)) && glob(rest, &n[1..]),
        }
    }
    pattern.split('|').any(|alt| glob(alt.trim().as_bytes(), name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(sql: &str) -> CreateTable {
        match parse(sql).unwrap() {
            Some(Stmt::CreateTable(c)) => c,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn create_table_clauses_in_any_order() {
        let c = ct("CREATE TABLE IF NOT EXISTS Sales.Orders (id BIGINT NOT NULL, amount DECIMAL(12, 2) COMMENT 'x', day DATE) \
             USING PARQUET PARTITIONED BY (day) LOCATION 's3://b/orders/' COMMENT 'all orders'");
        assert_eq!(c.name, Some(Name { db: Some("sales".into()), name: "orders".into() }));
        assert!(c.if_not_exists);
        let cols = c.columns.unwrap();
        assert_eq!(cols[1], ColumnDef { name: "amount".into(), data_type: "decimal(12,2)".into(), nullable: true });
        assert!(!cols[0].nullable);
        assert_eq!(c.provider.as_deref(), Some("parquet"));
        assert_eq!(c.partitioned_by, vec!["day".to_string()]);
        assert_eq!(c.location.as_deref(), Some("s3://b/orders/"));
        let c = ct("create table t location '/x' using csv options (header 'true', sep=',')");
        assert_eq!(c.options.get("header").map(String::as_str), Some("true"));
        assert_eq!(c.options.get("sep").map(String::as_str), Some(","));
    }

    #[test]
    fn ctas_keeps_the_query_text() {
        let c = ct("CREATE TABLE t USING parquet\n  AS SELECT a, 'x;y' AS b\nFROM v;");
        assert_eq!(c.query.as_deref(), Some("SELECT a, 'x;y' AS b\nFROM v"));
        match parse("create or replace temp view v as select 1 as x").unwrap() {
            Some(Stmt::CreateTempView { name, replace, query }) => {
                assert_eq!((name.as_str(), replace, query.as_str()), ("v", true, "select 1 as x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_statements_and_queries() {
        assert_eq!(parse("select 1").unwrap(), None);
        assert_eq!(
            parse("create external table t stored as csv location '/x'").unwrap_err().error_class,
            "UNSUPPORTED_FEATURE"
        );
        assert_eq!(
            parse("SHOW TABLES IN sales LIKE 'o*'").unwrap(),
            Some(Stmt::ShowTables { db: Some("sales".into()), pattern: Some("o*".into()) })
        );
        assert_eq!(
            parse("drop database if exists d cascade").unwrap(),
            Some(Stmt::DropDatabase { name: "d".into(), if_exists: true, cascade: true })
        );
        assert_eq!(
            parse("DESC EXTENDED `My Table`").unwrap(),
            Some(Stmt::Describe { name: Name { db: None, name: "My Table".into() }, extended: true })
        );
        assert!(parse("CREATE TABLE t (a INT").is_err());
        assert!(parse("DROP TABLE t extra").is_err());
        assert!(like("ord*|cust*", "Orders") && !like("ord*", "sales"));
    }
}
