//! The table catalog (the Hive metastore's job), kept in the namenode group's replicated
//! metadata, so it survives restarts and the loss of a namenode as the namespace does.
//!
//! - A database is the directory `CATALOG_DIR/<db>` (mode 1777: anyone adds tables, each
//!   table is dropped by its owner); `default` is made by the namenode.
//! - A table is the directory `CATALOG_DIR/<db>/<table>`, whose extended attribute
//!   [`TABLE_XATTR`] holds its [`TableEntry`] (versioned JSON: location, format, columns,
//!   partition columns). It is made with one namespace operation (create if absent, with
//!   its attribute), so of two sessions creating one table exactly one succeeds.
//! - A table's data is wherever its location says; reading it takes the user's permission
//!   there (storage-based authorization, as Hive's on HDFS). A managed table's data is
//!   under its owner's `/user/NAME/warehouse/`, and goes with the table when it is dropped.
//! - Partitions are not listed in the catalog: they are the `key=value` directories found
//!   under the location when the table is read.
//!
//! [`TarnCatalog`] shows the catalog to DataFusion (`spark_catalog`, one schema per
//! database); tables registered in it (temp views, `CREATE EXTERNAL TABLE` of a SQL job)
//! stay in that session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::config::TableOptions;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::options::ReadOptions;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};
use tarn_client::{ClientError, ErrorKind, MkdirOptions, NamenodeClient};

/// Where the catalog lives (made by the namenode, mode 1777).
pub const CATALOG_DIR: &str = "/.tarn/catalog";
/// The database every session starts in (made by the namenode).
pub const DEFAULT_DATABASE: &str = "default";
/// The catalog's name in SQL (Spark's name for its session catalog).
pub const CATALOG_NAME: &str = "spark_catalog";
/// The attribute of a table's directory that holds its [`TableEntry`].
pub const TABLE_XATTR: &str = "tarn.catalog.table";
/// The attribute of a database's directory that holds its [`DatabaseEntry`].
pub const DATABASE_XATTR: &str = "tarn.catalog.database";
/// The file formats a table may have.
pub const PROVIDERS: [&str; 3] = ["parquet", "csv", "json"];

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the database `{0}` does not exist")]
    NoDatabase(String),
    #[error("the table `{db}`.`{table}` does not exist")]
    NoTable { db: String, table: String },
    #[error("the database `{0}` already exists")]
    DatabaseExists(String),
    #[error("the table `{db}`.`{table}` already exists")]
    TableExists { db: String, table: String },
    #[error("the database `{db}` is not empty ({tables} tables): drop them first, or use CASCADE")]
    DatabaseNotEmpty { db: String, tables: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("permission denied: {what}: {source}")]
    Denied { what: String, source: ClientError },
    #[error("{what}: {source}")]
    Cluster { what: String, source: ClientError },
    #[error("the catalog entry {path} cannot be read: {why}")]
    Corrupt { path: String, why: String },
}

fn cluster(what: impl Into<String>) -> impl FnOnce(ClientError) -> CatalogError {
    let what = what.into();
    move |source| match source.kind() {
        ErrorKind::PermissionDenied => CatalogError::Denied { what, source },
        _ => CatalogError::Cluster { what, source },
    }
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// `name` as the catalog keeps it (lower case, as Spark's), if it may name a database or
/// a table: 1 to 128 letters, digits or `_`.
pub fn check_name(kind: &str, name: &str) -> Result<String> {
    let n = name.to_ascii_lowercase();
    if n.is_empty() || n.len() > 128 || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CatalogError::Invalid(format!(
            "{kind} name {name:?}: 1 to 128 letters, digits or '_' (Tarn keeps no other names)"
        )));
    }
    Ok(n)
}

pub fn database_dir(db: &str) -> String {
    format!("{CATALOG_DIR}/{db}")
}

pub fn table_dir(db: &str, table: &str) -> String {
    format!("{CATALOG_DIR}/{db}/{table}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Spark's name of a column type (`int`, `decimal(10,2)`, `timestamp`), for the types a
/// table may hold.
pub fn type_name(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp".into(),
        DataType::Timestamp(_, None) => "timestamp_ntz".into(),
        _ => return None,
    })
}

/// The Arrow type of a Spark SQL type name (`int`, `string`, `decimal(10,2)`, ...).
pub fn parse_type(s: &str) -> Option<DataType> {
    let t = s.trim().to_ascii_lowercase();
    if let Some(args) = t.strip_prefix("decimal(").and_then(|r| r.strip_suffix(')')) {
        let (p, sc) = args.split_once(',').unwrap_or((args, "0"));
        let (p, sc) = (p.trim().parse::<u8>().ok()?, sc.trim().parse::<i8>().ok()?);
        if p == 0 || p > 38 || sc < 0 || sc as u8 > p {
            return None;
        }
        return Some(DataType::Decimal128(p, sc));
    }
    Some(match t.as_str() {
        "boolean" | "bool" => DataType::Boolean,
        "tinyint" | "byte" => DataType::Int8,
        "smallint" | "short" => DataType::Int16,
        "int" | "integer" => DataType::Int32,
        "bigint" | "long" => DataType::Int64,
        "float" | "real" => DataType::Float32,
        "double" => DataType::Float64,
        "decimal" => DataType::Decimal128(10, 0),
        "string" | "varchar" | "char" => DataType::Utf8,
        "binary" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp" | "timestamp_ltz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => return None,
    })
}

/// A database's entry (on its directory; `default` has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseEntry {
    /// [`DatabaseEntry::FORMAT`]; a newer one is refused, not misread.
    pub format: u32,
    pub name: String,
    /// Where its managed tables go (`<location>/<table>/`); `None`: each owner's
    /// `/user/NAME/warehouse/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub owner: String,
    pub created_ms: u64,
}

impl DatabaseEntry {
    pub const FORMAT: u32 = 1;

    pub fn new(name: &str, owner: &str) -> DatabaseEntry {
        DatabaseEntry {
            format: Self::FORMAT,
            name: name.into(),
            location: None,
            comment: None,
            owner: owner.into(),
            created_ms: now_ms(),
        }
    }
}

/// One column of a table: its name, Spark's name of its type, whether it takes nulls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

/// A table's entry: what its data is and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    /// [`TableEntry::FORMAT`]; a newer one is refused, not misread.
    pub format: u32,
    pub database: String,
    pub name: String,
    /// A directory URL ending in `/` (`tarn:///path/`, `s3://bucket/path/`).
    pub location: String,
    /// `parquet`, `csv` or `json`.
    pub provider: String,
    /// Every column, the partition columns last (as Spark orders them).
    pub columns: Vec<Column>,
    pub partition_columns: Vec<String>,
    /// The format's options (`header`, `sep` of csv).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Its data goes with it when it is dropped (made by `saveAsTable` or `CREATE TABLE`
    /// without a location).
    pub managed: bool,
    pub owner: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl TableEntry {
    pub const FORMAT: u32 = 1;

    /// The entry of a new table of `schema` (its partition columns must be last).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        database: &str,
        name: &str,
        location: &str,
        provider: &str,
        schema: &Schema,
        partition_columns: Vec<String>,
        managed: bool,
        owner: &str,
    ) -> Result<TableEntry> {
        if !PROVIDERS.contains(&provider) {
            return Err(CatalogError::Invalid(format!("a table of format {provider:?} (parquet, csv or json)")));
        }
        let mut columns = Vec::new();
        for f in schema.fields() {
            let t = type_name(f.data_type()).ok_or_else(|| {
                CatalogError::Invalid(format!(
                    "the column {} is of type {}, which a table cannot keep",
                    f.name(),
                    f.data_type()
                ))
            })?;
            columns.push(Column { name: f.name().clone(), data_type: t, nullable: f.is_nullable() });
        }
        let n = columns.len();
        for (i, p) in partition_columns.iter().enumerate() {
            let at = n - partition_columns.len().min(n) + i;
            if columns.get(at).is_none_or(|c| !c.name.eq_ignore_ascii_case(p)) {
                return Err(CatalogError::Invalid(format!("the partition column {p} is not among the last columns")));
            }
        }
        if partition_columns.len() >= n && n > 0 {
            return Err(CatalogError::Invalid("a table cannot be partitioned by all its columns".into()));
        }
        let mut location = location.to_string();
        if !location.ends_with('/') {
            location.push('/');
        }
        Ok(TableEntry {
            format: Self::FORMAT,
            database: database.into(),
            name: name.into(),
            location,
            provider: provider.into(),
            columns,
            partition_columns,
            options: BTreeMap::new(),
            managed,
            owner: owner.into(),
            created_ms: now_ms(),
            comment: None,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry serializes")
    }

    pub fn decode(path: &str, bytes: &[u8]) -> Result<TableEntry> {
        let corrupt = |why: String| CatalogError::Corrupt { path: path.into(), why };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format > u64::from(Self::FORMAT) {
            return Err(corrupt(format!("format {format} is newer than this binary's ({})", Self::FORMAT)));
        }
        serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
    }

    fn column_type(&self, c: &Column) -> DfResult<DataType> {
        parse_type(&c.data_type).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "table {}.{}: unknown column type {:?}",
                self.database, self.name, c.data_type
            ))
        })
    }

    fn is_partition(&self, c: &Column) -> bool {
        self.partition_columns.iter().any(|p| p.eq_ignore_ascii_case(&c.name))
    }

    /// Every column, partition columns last.
    pub fn schema(&self) -> DfResult<Schema> {
        let fields = self
            .columns
            .iter()
            .map(|c| Ok(Field::new(&c.name, self.column_type(c)?, c.nullable)))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Schema::new(fields))
    }

    /// The columns the files hold (not the partition columns).
    pub fn file_schema(&self) -> DfResult<Schema> {
        let fields = self
            .columns
            .iter()
            .filter(|c| !self.is_partition(c))
            .map(|c| Ok(Field::new(&c.name, self.column_type(c)?, c.nullable)))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Schema::new(fields))
    }

    pub fn partition_types(&self) -> DfResult<Vec<(String, DataType)>> {
        self.columns
            .iter()
            .filter(|c| self.is_partition(c))
            .map(|c| Ok((c.name.clone(), self.column_type(c)?)))
            .collect()
    }
}

/// The catalog as one user sees and changes it (the client acts as that user).
#[derive(Clone)]
pub struct Catalog {
    nn: Arc<NamenodeClient>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl Catalog {
    pub fn new(nn: Arc<NamenodeClient>) -> Catalog {
        Catalog { nn }
    }

    pub fn namenode(&self) -> &Arc<NamenodeClient> {
        &self.nn
    }

    /// The names of every database.
    pub async fn databases(&self) -> Result<Vec<String>> {
        let all = match self.nn.list_dir_all(CATALOG_DIR).await {
            Ok(all) => all,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(cluster(format!("list {CATALOG_DIR}"))(e)),
        };
        let mut names: BTreeSet<String> =
            all.iter().filter(|s| s.is_dir()).filter_map(|s| s.path.rsplit('/').next().map(str::to_string)).collect();
        names.insert(DEFAULT_DATABASE.into());
        Ok(names.into_iter().collect())
    }

    /// Database `db`'s entry, `None` if there is no such database.
    pub async fn database(&self, db: &str) -> Result<Option<DatabaseEntry>> {
        let path = database_dir(db);
        let st = self.nn.get_file_info(&path, true).await.map_err(cluster(format!("look up {path}")))?;
        let Some(st) = st else {
            return Ok((db == DEFAULT_DATABASE).then(|| DatabaseEntry::new(DEFAULT_DATABASE, "root")));
        };
        match st.xattrs.get(DATABASE_XATTR) {
            Some(v) => {
                let corrupt = |why: String| CatalogError::Corrupt { path: path.clone(), why };
                let e: DatabaseEntry = serde_json::from_slice(v).map_err(|e| corrupt(e.to_string()))?;
                if e.format > DatabaseEntry::FORMAT {
                    return Err(corrupt(format!("format {} is newer than this binary's", e.format)));
                }
                Ok(Some(e))
            }
            None => Ok(Some(DatabaseEntry { created_ms: st.mtime_ms, ..DatabaseEntry::new(db, &st.owner) })),
        }
    }

    /// Makes a database; `false` if it exists and `if_not_exists`.
    pub async fn create_database(&self, e: &DatabaseEntry, if_not_exists: bool) -> Result<bool> {
        let path = database_dir(&e.name);
        let o = MkdirOptions {
            mode: 0o1777,
            xattrs: BTreeMap::from([(DATABASE_XATTR.to_string(), serde_json::to_vec(e).expect("serializes"))]),
            require_dir: Some(CATALOG_DIR.into()),
            ..Default::default()
        };
        match self.nn.mkdir_exclusive(&path, &o).await {
            Ok(_) => Ok(true),
            Err(err) if matches!(err.kind(), ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned) => {
                if if_not_exists {
                    Ok(false)
                } else {
                    Err(CatalogError::DatabaseExists(e.name.clone()))
                }
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {
                Err(CatalogError::Invalid(format!("the catalog is not there yet ({CATALOG_DIR}): retry in a moment")))
            }
            Err(err) => Err(cluster(format!("make {path}"))(err)),
        }
    }

    /// Drops a database (with its tables if `cascade`); returns the tables dropped with
    /// it (the caller removes the managed ones' data). `None`: it did not exist.
    pub async fn drop_database(&self, db: &str, cascade: bool) -> Result<Option<Vec<TableEntry>>> {
        if db == DEFAULT_DATABASE {
            return Err(CatalogError::Invalid("the default database cannot be dropped".into()));
        }
        let path = database_dir(db);
        let Some(st) = self.nn.get_file_info(&path, false).await.map_err(cluster(format!("look up {path}")))? else {
            return Ok(None);
        };
        let tables = self.tables(db).await?;
        if !tables.is_empty() && !cascade {
            return Err(CatalogError::DatabaseNotEmpty { db: db.into(), tables: tables.len() });
        }
        let mut dropped = Vec::new();
        for t in tables {
            if let Some(e) = self.drop_table(db, &t).await? {
                dropped.push(e);
            }
        }
        match self.nn.delete(&path, false, Some(st.file_id)).await {
            Ok(_) => Ok(Some(dropped)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(dropped)),
            Err(e) => Err(cluster(format!("drop the database {db}"))(e)),
        }
    }

    /// The names of the tables of `db`.
    pub async fn tables(&self, db: &str) -> Result<Vec<String>> {
        let path = database_dir(db);
        match self.nn.list_dir_all(&path).await {
            Ok(all) => Ok(all
                .iter()
                .filter(|s| s.is_dir())
                .filter_map(|s| s.path.rsplit('/').next().map(str::to_string))
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if db == DEFAULT_DATABASE {
                    Ok(Vec::new())
                } else {
                    Err(CatalogError::NoDatabase(db.into()))
                }
            }
            Err(e) => Err(cluster(format!("list the tables of {db}"))(e)),
        }
    }

    /// Table `db.table`'s entry, `None` if there is no such table.
    pub async fn table(&self, db: &str, table: &str) -> Result<Option<TableEntry>> {
        let path = table_dir(db, table);
        let Some(st) = self.nn.get_file_info(&path, true).await.map_err(cluster(format!("look up {path}")))? else {
            return Ok(None);
        };
        let Some(v) = st.xattrs.get(TABLE_XATTR) else {
            return Err(CatalogError::Corrupt { path, why: format!("no attribute {TABLE_XATTR}") });
        };
        TableEntry::decode(&path, v).map(Some)
    }

    /// Adds a table; `false` if it exists and `if_not_exists`.
    pub async fn create_table(&self, e: &TableEntry, if_not_exists: bool) -> Result<bool> {
        let db_path = database_dir(&e.database);
        let path = table_dir(&e.database, &e.name);
        let o = MkdirOptions {
            mode: 0o755,
            xattrs: BTreeMap::from([(TABLE_XATTR.to_string(), e.encode())]),
            require_dir: Some(db_path),
            ..Default::default()
        };
        // `default` is made by the namenode's leader within a second of its start.
        let mut wait = Duration::from_millis(50);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            return match self.nn.mkdir_exclusive(&path, &o).await {
                Ok(_) => Ok(true),
                Err(err) if matches!(err.kind(), ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned) => {
                    if if_not_exists {
                        Ok(false)
                    } else {
                        Err(CatalogError::TableExists { db: e.database.clone(), table: e.name.clone() })
                    }
                }
                Err(err) if err.kind() == ErrorKind::NotFound => {
                    if e.database == DEFAULT_DATABASE && std::time::Instant::now() < deadline {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    Err(CatalogError::NoDatabase(e.database.clone()))
                }
                Err(err) => Err(cluster(format!("make {path}"))(err)),
            };
        }
    }

    /// Replaces an existing table's entry with `e`, in one namespace operation.
    pub async fn replace_table(&self, e: &TableEntry) -> Result<()> {
        let path = table_dir(&e.database, &e.name);
        let a = tarn_client::SetAttributes {
            set_xattrs: BTreeMap::from([(TABLE_XATTR.to_string(), e.encode())]),
            ..Default::default()
        };
        match self.nn.set_attributes(&path, a).await {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                Err(CatalogError::NoTable { db: e.database.clone(), table: e.name.clone() })
            }
            Err(err) => Err(cluster(format!("replace the entry {path}"))(err)),
        }
    }

    /// Removes a table's entry (not its data); `None` if there was no such table.
    pub async fn drop_table(&self, db: &str, table: &str) -> Result<Option<TableEntry>> {
        let path = table_dir(db, table);
        let Some(st) = self.nn.get_file_info(&path, true).await.map_err(cluster(format!("look up {path}")))? else {
            return Ok(None);
        };
        let entry = match st.xattrs.get(TABLE_XATTR) {
            Some(v) => TableEntry::decode(&path, v)?,
            None => return Err(CatalogError::Corrupt { path, why: format!("no attribute {TABLE_XATTR}") }),
        };
        match self.nn.delete(&path, false, Some(st.file_id)).await {
            Ok(_) => Ok(Some(entry)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(cluster(format!("drop the table {db}.{table}"))(e)),
        }
    }
}

/// What a table read takes from the session it is planned in.
#[derive(Debug, Clone)]
struct ReadConfig {
    config: SessionConfig,
    options: TableOptions,
}

/// The catalog as DataFusion's `spark_catalog`: a schema per database.
#[derive(Debug)]
pub struct TarnCatalog {
    catalog: Catalog,
    read: ReadConfig,
    schemas: RwLock<HashMap<String, Arc<Database>>>,
}

impl TarnCatalog {
    fn database(&self, name: &str) -> Arc<Database> {
        let name = name.to_ascii_lowercase();
        if let Some(d) = self.schemas.read().unwrap_or_else(|p| p.into_inner()).get(&name) {
            return d.clone();
        }
        let mut all = self.schemas.write().unwrap_or_else(|p| p.into_inner());
        all.entry(name.clone())
            .or_insert_with(|| {
                Arc::new(Database {
                    name,
                    catalog: self.catalog.clone(),
                    read: self.read.clone(),
                    session: RwLock::default(),
                })
            })
            .clone()
    }
}

impl CatalogProvider for TarnCatalog {
    /// The databases this session has named (listing them all takes a call: see
    /// [`Catalog::databases`]).
    fn schema_names(&self) -> Vec<String> {
        self.schemas.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        check_name("database", name).ok()?;
        Some(self.database(name))
    }
}

/// One database: its tables from the catalog, under the session's own (temp views).
#[derive(Debug)]
pub struct Database {
    name: String,
    catalog: Catalog,
    read: ReadConfig,
    session: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

#[async_trait]
impl SchemaProvider for Database {
    /// The session's own tables (the catalog's take a call: see [`Catalog::tables`]).
    fn table_names(&self) -> Vec<String> {
        self.session.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let key = name.to_ascii_lowercase();
        if let Some(t) = self.session.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Some(t.clone()));
        }
        if check_name("table", &key).is_err() {
            return Ok(None);
        }
        let entry = match self.catalog.table(&self.name, &key).await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(None),
            Err(e) => return Err(DataFusionError::External(Box::new(e))),
        };
        Ok(Some(listing_table(&entry, &self.read)?))
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.session.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_ascii_lowercase(), table))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.session.write().unwrap_or_else(|p| p.into_inner()).remove(&name.to_ascii_lowercase()))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.session.read().unwrap_or_else(|p| p.into_inner()).contains_key(&name.to_ascii_lowercase())
    }
}

/// The table `entry` describes, read as DataFusion reads files of its format.
fn listing_table(entry: &TableEntry, read: &ReadConfig) -> DfResult<Arc<dyn TableProvider>> {
    let url = ListingTableUrl::parse(&entry.location)?;
    let (c, o) = (&read.config, read.options.clone());
    let opt = |k: &str| entry.options.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
    let options = match entry.provider.as_str() {
        "parquet" => ParquetReadOptions::default().to_listing_options(c, o),
        "csv" => {
            let mut r = CsvReadOptions::new()
                .has_header(opt("header").is_some_and(|v| v.eq_ignore_ascii_case("true")))
                .file_extension(".csv");
            if let Some([b]) = opt("sep").or(opt("delimiter")).map(str::as_bytes) {
                r = r.delimiter(*b);
            }
            r.to_listing_options(c, o)
        }
        "json" => JsonReadOptions::default().to_listing_options(c, o),
        other => return Err(DataFusionError::Plan(format!("table {}: unknown format {other:?}", entry.name))),
    }
    .with_table_partition_cols(entry.partition_types()?);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(Arc::new(entry.file_schema()?));
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Puts the catalog into `ctx` as its default catalog, `database` its current database:
/// unqualified names are tables of `database` (or the session's own), `db.table` names
/// another database's.
pub fn register(ctx: &SessionContext, nn: Arc<NamenodeClient>, database: &str) -> DfResult<()> {
    let read = {
        let state = ctx.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        options.catalog.default_catalog = CATALOG_NAME.into();
        options.catalog.default_schema = database.to_ascii_lowercase();
        ReadConfig { config: state.config().clone(), options: state.default_table_options() }
    };
    let catalog = TarnCatalog { catalog: Catalog::new(nn), read, schemas: RwLock::default() };
    catalog.database(database);
    ctx.register_catalog(CATALOG_NAME, Arc::new(catalog));
    Ok(())
}

/// The partition columns under a table's location: the `key=value` directories, their
/// types inferred from the values as Spark infers them (int, bigint, double, date,
/// else string). Refused if the levels disagree (`a=1/b=2` beside `b=2/a=1`).
pub async fn discover_partitions(nn: &NamenodeClient, dir: &str) -> Result<Vec<(String, DataType)>> {
    let dir = dir.trim_end_matches('/');
    let all = match nn.list_recursive_all(&format!("{dir}/"), false).await {
        Ok(all) => all,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(cluster(format!("list {dir}"))(e)),
    };
    let mut keys: Option<Vec<String>> = None;
    let mut values: Vec<Vec<String>> = Vec::new();
    for f in &all {
        let rel = f.path.strip_prefix(dir).unwrap_or(&f.path).trim_start_matches('/');
        let parts: Vec<&str> = rel.split('/').collect();
        let (dirs, file) = parts.split_at(parts.len().saturating_sub(1));
        if file.first().is_some_and(|n| n.starts_with('_') || n.starts_with('.')) {
            continue;
        }
        let kv: Vec<(&str, &str)> = dirs.iter().map_while(|d| d.split_once('=')).collect();
        let these: Vec<String> = kv.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        match &keys {
            None => {
                values = vec![Vec::new(); these.len()];
                keys = Some(these);
            }
            Some(k) if *k != these => {
                return Err(CatalogError::Invalid(format!(
                    "the partition directories under {dir} disagree: {} and {}",
                    k.join("/"),
                    these.join("/")
                )))
            }
            Some(_) => {}
        }
        for (i, (_, v)) in kv.iter().enumerate() {
            values[i].push(v.to_string());
        }
    }
    let keys = keys.unwrap_or_default();
    Ok(keys.into_iter().zip(values).map(|(k, vs)| (k, infer_partition_type(&vs))).collect())
}

/// The type Spark infers for a partition column of these values.
fn infer_partition_type(values: &[String]) -> DataType {
    let vals: Vec<&str> = values.iter().map(String::as_str).filter(|v| *v != "__HIVE_DEFAULT_PARTITION__").collect();
    if vals.is_empty() {
        return DataType::Utf8;
    }
    if vals.iter().all(|v| v.parse::<i32>().is_ok()) {
        return DataType::Int32;
    }
    if vals.iter().all(|v| v.parse::<i64>().is_ok()) {
        return DataType::Int64;
    }
    if vals.iter().all(|v| v.parse::<f64>().is_ok() && !v.eq_ignore_ascii_case("nan") && !v.contains("inf")) {
        return DataType::Float64;
    }
    let is_date = |v: &str| {
        let b = v.as_bytes();
        b.len() == 10 && b[4] == b'-' && b[7] == b'-' && v.split('-').all(|p| p.chars().all(|c| c.is_ascii_digit()))
    };
    if vals.iter().all(|v| is_date(v)) {
        return DataType::Date32;
    }
    DataType::Utf8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert_eq!(check_name("table", "Sales_2024").unwrap(), "sales_2024");
        assert!(check_name("table", "a.b").is_err());
        assert!(check_name("table", "").is_err());
        for t in ["int", "bigint", "string", "decimal(25,2)", "date", "timestamp", "timestamp_ntz", "double"] {
            assert_eq!(type_name(&parse_type(t).unwrap()).unwrap(), t);
        }
        assert!(parse_type("decimal(39,2)").is_none());
        assert!(parse_type("map<int,int>").is_none());
    }

    #[test]
    fn partition_types_are_inferred_as_spark_does() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(infer_partition_type(&s(&["1", "20"])), DataType::Int32);
        assert_eq!(infer_partition_type(&s(&["1", "3000000000"])), DataType::Int64);
        assert_eq!(infer_partition_type(&s(&["1.5", "2"])), DataType::Float64);
        assert_eq!(infer_partition_type(&s(&["2024-01-02"])), DataType::Date32);
        assert_eq!(infer_partition_type(&s(&["2024-01-02", "x"])), DataType::Utf8);
    }

    /// An entry as format 1 wrote it still reads, and a newer format is refused.
    #[test]
    fn golden_entry_of_format_1_decodes() {
        let bytes = include_bytes!("../tests/golden/catalog-table-v1.json");
        let e = TableEntry::decode("/.tarn/catalog/default/sales", bytes).unwrap();
        assert_eq!(e.name, "sales");
        assert_eq!(e.location, "tarn:///user/alice/warehouse/sales/");
        assert_eq!(e.partition_columns, vec!["day".to_string()]);
        let s = e.schema().unwrap();
        assert_eq!(s.field(1).data_type(), &DataType::Decimal128(12, 2));
        assert_eq!(e.file_schema().unwrap().fields().len(), 2);
        assert_eq!(e.partition_types().unwrap(), vec![("day".to_string(), DataType::Date32)]);
        // Today's code writes the same bytes: the format did not drift.
        assert_eq!(e.encode(), bytes.to_vec());
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v["format"] = serde_json::json!(TableEntry::FORMAT + 1);
        let e = TableEntry::decode("x", &serde_json::to_vec(&v).unwrap()).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn entries_keep_partition_columns_last() {
        let s = Schema::new(vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Utf8, true)]);
        let e = TableEntry::new("default", "t", "tarn:///x", "parquet", &s, vec!["b".into()], true, "u").unwrap();
        assert_eq!(e.location, "tarn:///x/");
        assert_eq!(TableEntry::decode("p", &e.encode()).unwrap(), e);
        assert!(TableEntry::new("default", "t", "tarn:///x", "parquet", &s, vec!["a".into()], true, "u").is_err());
        assert!(TableEntry::new("default", "t", "tarn:///x", "orc", &s, vec![], true, "u").is_err());
    }
}
