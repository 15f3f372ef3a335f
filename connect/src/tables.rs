//! The catalog through Spark Connect: `spark.sql`'s catalog statements ([`crate::ddl`]),
//! `df.write.saveAsTable`, and `spark.catalog.*`. Tables are [`tarn_jobs::catalog`]'s:
//! kept in the namenode group's metadata, so every session, endpoint and SQL job sees
//! them, and they outlive restarts and failover.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, ListBuilder, RecordBatch, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use spark_connect_proto::spark::connect as sc;
use tarn_jobs::catalog::{self, CatalogError, DatabaseEntry, TableEntry, DEFAULT_DATABASE};

use crate::ddl::{self, Name, Stmt};
use crate::errors::SparkError;
use crate::plan::{self, Planner};
use crate::service::{home, Endpoint, Responder, Session};

/// A catalog error as Spark raises it.
pub(crate) fn catalog_error(e: CatalogError) -> SparkError {
    match e {
        CatalogError::NoDatabase(db) => SparkError::analysis_with(
            "SCHEMA_NOT_FOUND",
            format!("The schema `{db}` cannot be found. Verify the spelling and correctness of the schema and catalog."),
            "42704",
            &[("schemaName", format!("`spark_catalog`.`{db}`"))],
        ),
        CatalogError::NoTable { db, table } => not_found(&format!("`spark_catalog`.`{db}`.`{table}`")),
        CatalogError::DatabaseExists(db) => SparkError::analysis_with(
            "SCHEMA_ALREADY_EXISTS",
            format!("Cannot create schema `{db}` because it already exists."),
            "42P06",
            &[("schemaName", format!("`spark_catalog`.`{db}`"))],
        ),
        CatalogError::TableExists { db, table } => exists(&format!("`spark_catalog`.`{db}`.`{table}`")),
        CatalogError::DatabaseNotEmpty { db, .. } => SparkError::analysis_with(
            "SCHEMA_NOT_EMPTY",
            format!("Cannot drop a schema `{db}` because it contains objects. Use DROP SCHEMA ... CASCADE to drop the schema and all its objects."),
            "2BP01",
            &[("schemaName", format!("`{db}`"))],
        ),
        CatalogError::Denied { what, source } => SparkError::analysis_with(
            "INSUFFICIENT_PERMISSIONS",
            format!("Permission denied: {what} ({source})."),
            "42501",
            &[],
        ),
        CatalogError::Invalid(m) => SparkError::analysis("INVALID_CATALOG_REQUEST", m),
        e @ (CatalogError::Cluster { .. } | CatalogError::Corrupt { .. }) => SparkError::internal(e.to_string()),
    }
}

fn not_found(name: &str) -> SparkError {
    SparkError::analysis_with(
        "TABLE_OR_VIEW_NOT_FOUND",
        format!(
            "The table or view {name} cannot be found. Verify the spelling and correctness of the schema and catalog."
        ),
        "42P01",
        &[("relationName", name.to_string())],
    )
}

fn exists(name: &str) -> SparkError {
    SparkError::analysis_with(
        "TABLE_OR_VIEW_ALREADY_EXISTS",
        format!("Cannot create table or view {name} because it already exists."),
        "42P07",
        &[("relationName", name.to_string())],
    )
}

fn names(kind: &str, name: &str) -> Result<String, SparkError> {
    catalog::check_name(kind, name).map_err(catalog_error)
}

/// A batch of string and boolean columns (`None`: null).
pub(crate) enum Col {
    Str(&'static str, Vec<Option<String>>),
    Bool(&'static str, Vec<bool>),
    Strs(&'static str, Vec<Vec<String>>),
}

pub(crate) fn batch(cols: Vec<Col>) -> Result<RecordBatch, SparkError> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for c in cols {
        match c {
            Col::Str(n, v) => {
                fields.push(Field::new(n, DataType::Utf8, true));
                arrays.push(Arc::new(StringArray::from(v)));
            }
            Col::Bool(n, v) => {
                fields.push(Field::new(n, DataType::Boolean, false));
                arrays.push(Arc::new(BooleanArray::from(v)));
            }
            Col::Strs(n, v) => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for row in v {
                    for s in row {
                        b.values().append_value(s);
                    }
                    b.append(true);
                }
                let a = b.finish();
                fields.push(Field::new(n, a.data_type().clone(), true));
                arrays.push(Arc::new(a));
            }
        }
    }
    if fields.is_empty() {
        return Ok(RecordBatch::new_empty(Arc::new(Schema::empty())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| SparkError::internal(e.to_string()))
}

fn no_rows() -> RecordBatch {
    RecordBatch::new_empty(Arc::new(Schema::empty()))
}

/// `schema` with the columns named in `partition_by` moved last, in that order (as Spark
/// orders a partitioned table's columns).
fn partitions_last(schema: &Schema, partition_by: &[String]) -> Result<Schema, SparkError> {
    let mut fields: Vec<Field> = Vec::new();
    for f in schema.fields() {
        if !partition_by.iter().any(|p| p.eq_ignore_ascii_case(f.name())) {
            fields.push(f.as_ref().clone());
        }
    }
    for p in partition_by {
        let f = schema.fields().iter().find(|f| f.name().eq_ignore_ascii_case(p)).ok_or_else(|| {
            SparkError::analysis_with(
                "COLUMN_NOT_DEFINED_IN_TABLE",
                format!("partition column `{p}` is not defined in the table's columns."),
                "42703",
                &[("colName", format!("`{p}`"))],
            )
        })?;
        fields.push(f.as_ref().clone());
    }
    Ok(Schema::new(fields))
}

impl Endpoint {
    fn database_of(s: &Session, name: &Name) -> Result<String, SparkError> {
        match &name.db {
            Some(db) => names("database", db),
            None => Ok(s.database.lock().expect("database").clone()),
        }
    }

    /// Where a managed table of `db` goes: the database's location, else the owner's
    /// `/user/NAME/warehouse/`.
    async fn managed_location(&self, s: &Session, db: &str, table: &str) -> Result<String, SparkError> {
        let entry = s
            .catalog
            .database(db)
            .await
            .map_err(catalog_error)?
            .ok_or_else(|| catalog_error(CatalogError::NoDatabase(db.into())))?;
        Ok(match entry.location {
            Some(l) => format!("{}/{table}/", l.trim_end_matches('/')),
            None if db == DEFAULT_DATABASE => format!("tarn://{}/warehouse/{table}/", home(&s.user)),
            None => format!("tarn://{}/warehouse/{db}.db/{table}/", home(&s.user)),
        })
    }

    /// Checks that a table of `provider` may be made as `db.table` (the format is one a
    /// table may have, the database exists); the table already there, if any.
    async fn new_table_place(
        &self,
        s: &Session,
        provider: &str,
        db: &str,
        table: &str,
    ) -> Result<Option<TableEntry>, SparkError> {
        if !catalog::PROVIDERS.contains(&provider) {
            return Err(SparkError::unsupported(format!("tables of format {provider} (parquet, csv or json)")));
        }
        if s.catalog.database(db).await.map_err(catalog_error)?.is_none() {
            return Err(catalog_error(CatalogError::NoDatabase(db.into())));
        }
        s.catalog.table(db, table).await.map_err(catalog_error)
    }

    /// Removes a dropped managed table's data.
    async fn remove_data(&self, s: &Session, e: &TableEntry) -> Result<(), SparkError> {
        if !e.managed {
            return Ok(());
        }
        let Some((path, _)) = tarn_jobs::commit::cluster_path(&e.location) else { return Ok(()) };
        s.nn.delete(&path, true, None).await.map(|_| ()).map_err(|err| {
            SparkError::internal(format!("remove the data of {}.{} at {path}: {err}", e.database, e.name))
        })
    }

    /// Runs one catalog statement of `spark.sql`; its rows (none for most).
    pub(crate) async fn catalog_statement(&self, r: &Responder<'_>, stmt: Stmt) -> Result<RecordBatch, SparkError> {
        let s = r.s;
        let cat = &s.catalog;
        match stmt {
            Stmt::CreateDatabase { name, if_not_exists, comment, location } => {
                let name = names("database", &name)?;
                let mut e = DatabaseEntry::new(&name, &s.user);
                e.comment = comment;
                // Without a LOCATION, each owner's managed tables go under their own
                // warehouse (`/user/NAME/warehouse/DB.db/TABLE`).
                e.location = location.map(|l| plan::resolve_path(&l, &home(&s.user))).transpose()?;
                cat.create_database(&e, if_not_exists).await.map_err(catalog_error)?;
                Ok(no_rows())
            }
            Stmt::DropDatabase { name, if_exists, cascade } => {
                let name = names("database", &name)?;
                match cat.drop_database(&name, cascade).await.map_err(catalog_error)? {
                    Some(dropped) => {
                        for e in &dropped {
                            self.remove_data(s, e).await?;
                        }
                        let was_current = {
                            let mut current = s.database.lock().expect("database");
                            let was = *current == name;
                            if was {
                                *current = DEFAULT_DATABASE.into();
                            }
                            was
                        };
                        if was_current {
                            self.persist(s).await?;
                        }
                    }
                    None if if_exists => {}
                    None => return Err(catalog_error(CatalogError::NoDatabase(name))),
                }
                Ok(no_rows())
            }
            Stmt::ShowDatabases { pattern } => {
                let all = cat.databases().await.map_err(catalog_error)?;
                let shown = all.into_iter().filter(|d| pattern.as_ref().is_none_or(|p| ddl::like(p, d))).map(Some);
                batch(vec![Col::Str("namespace", shown.collect())])
            }
            Stmt::Use { name } => {
                let name = names("database", &name)?;
                if cat.database(&name).await.map_err(catalog_error)?.is_none() {
                    return Err(catalog_error(CatalogError::NoDatabase(name)));
                }
                *s.database.lock().expect("database") = name;
                self.persist(s).await?;
                Ok(no_rows())
            }
            Stmt::CreateTable(c) => {
                self.create_table(r, c).await?;
                Ok(no_rows())
            }
            Stmt::DropTable { name, if_exists } => {
                if name.db.is_none() && s.drop_view(&name.name) {
                    self.persist(s).await?;
                    return Ok(no_rows());
                }
                let db = Self::database_of(s, &name)?;
                let table = names("table", &name.name)?;
                match cat.drop_table(&db, &table).await.map_err(catalog_error)? {
                    Some(e) => self.remove_data(s, &e).await?,
                    None if if_exists => {}
                    None => return Err(not_found(&name.to_string())),
                }
                Ok(no_rows())
            }
            Stmt::DropView { name, if_exists } => {
                if s.drop_view(&name) {
                    self.persist(s).await?;
                } else if !if_exists {
                    return Err(not_found(&format!("`{name}`")));
                }
                Ok(no_rows())
            }
            Stmt::ShowTables { db, pattern } => {
                let db = match db {
                    Some(d) => names("database", &d)?,
                    None => s.database.lock().expect("database").clone(),
                };
                let mut tables = cat.tables(&db).await.map_err(catalog_error)?;
                tables.sort();
                let mut views: Vec<String> = s.views.lock().expect("views").keys().cloned().collect();
                views.sort();
                let keep = |n: &String| pattern.as_ref().is_none_or(|p| ddl::like(p, n));
                let tables: Vec<String> = tables.into_iter().filter(keep).collect();
                let views: Vec<String> = views.into_iter().filter(keep).collect();
                let mut ns = vec![Some(db); tables.len()];
                ns.extend(views.iter().map(|_| Some(String::new())));
                let temp: Vec<bool> = tables.iter().map(|_| false).chain(views.iter().map(|_| true)).collect();
                let all = tables.into_iter().chain(views).map(Some).collect();
                batch(vec![Col::Str("namespace", ns), Col::Str("tableName", all), Col::Bool("isTemporary", temp)])
            }
            Stmt::Describe { name, extended } => self.describe(s, &name, extended).await,
            Stmt::CreateTempView { name, replace, query } => {
                let rel = sql_relation(query);
                let ctx = self.context(s)?;
                let home = home(&s.user);
                let plan = Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(&rel).await?;
                if !replace && s.views.lock().expect("views").contains_key(&name.to_lowercase()) {
                    return Err(SparkError::analysis_with(
                        "TEMP_TABLE_OR_VIEW_ALREADY_EXISTS",
                        format!("Cannot create the temporary view `{name}` because it already exists."),
                        "42P07",
                        &[("relationName", format!("`{name}`"))],
                    ));
                }
                s.set_view(&name, plan, &rel);
                self.persist(s).await?;
                Ok(no_rows())
            }
            Stmt::Refresh { name } => {
                let db = Self::database_of(s, &name)?;
                let table = names("table", &name.name)?;
                if cat.table(&db, &table).await.map_err(catalog_error)?.is_none() {
                    return Err(not_found(&name.to_string()));
                }
                Ok(no_rows())
            }
        }
    }

    /// DESCRIBE's rows as Spark's: the columns (comments null), then the partition
    /// columns under `# Partition Information`, then, if `extended`, the table's details.
    async fn describe(&self, s: &Session, name: &Name, extended: bool) -> Result<RecordBatch, SparkError> {
        let type_of = |t: &DataType| catalog::type_name(t).unwrap_or_else(|| t.to_string().to_lowercase());
        let mut rows: Vec<(String, String, Option<String>)> = Vec::new();
        let view = if name.db.is_none() {
            s.views.lock().expect("views").get(&name.name.to_lowercase()).cloned()
        } else {
            None
        };
        if let Some(v) = view {
            rows.extend(v.schema().fields().iter().map(|f| (f.name().clone(), type_of(f.data_type()), None)));
        } else {
            let db = Self::database_of(s, name)?;
            let table = names("table", &name.name)?;
            let e = s
                .catalog
                .table(&db, &table)
                .await
                .map_err(catalog_error)?
                .ok_or_else(|| not_found(&name.to_string()))?;
            rows.extend(e.columns.iter().map(|c| (c.name.clone(), c.data_type.clone(), None)));
            let header = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), Some(c.to_string()));
            if !e.partition_columns.is_empty() {
                rows.push(header("# Partition Information", "", ""));
                rows.push(header("# col_name", "data_type", "comment"));
                for c in e.columns.iter().filter(|c| e.partition_columns.contains(&c.name)) {
                    rows.push((c.name.clone(), c.data_type.clone(), None));
                }
            }
            if extended {
                let kind = if e.managed { "MANAGED" } else { "EXTERNAL" };
                rows.push(header("", "", ""));
                rows.push(header("# Detailed Table Information", "", ""));
                for (k, v) in [
                    ("Catalog", catalog::CATALOG_NAME),
                    ("Database", &e.database),
                    ("Table", &e.name),
                    ("Owner", &e.owner),
                    ("Type", kind),
                    ("Provider", &e.provider),
                    ("Location", &e.location),
                ] {
                    rows.push(header(k, v, ""));
                }
                if let Some(c) = &e.comment {
                    rows.push(header("Comment", c, ""));
                }
            }
        }
        batch(vec![
            Col::Str("col_name", rows.iter().map(|r| Some(r.0.clone())).collect()),
            Col::Str("data_type", rows.iter().map(|r| Some(r.1.clone())).collect()),
            Col::Str("comment", rows.iter().map(|r| r.2.clone()).collect()),
        ])
    }

    /// `CREATE TABLE`: an entry over data that is there (its schema read from the files
    /// unless given), an empty managed table of the given columns, or a query's rows
    /// written as a new table (`AS query`).
    async fn create_table(&self, r: &Responder<'_>, c: ddl::CreateTable) -> Result<(), SparkError> {
        let s = r.s;
        let name = c.name.clone().ok_or_else(|| SparkError::invalid("CREATE TABLE without a name"))?;
        let db = Self::database_of(s, &name)?;
        let table = names("table", &name.name)?;
        let provider = c.provider.clone().unwrap_or_else(|| "parquet".into());
        // The old table of OR REPLACE stays, data and entry, until the new one is made.
        let mut replacing = None;
        if let Some(old) = self.new_table_place(s, &provider, &db, &table).await? {
            if c.if_not_exists {
                return Ok(());
            }
            if !c.or_replace {
                return Err(exists(&format!("`spark_catalog`.`{db}`.`{table}`")));
            }
            replacing = Some(old);
        }
        // `OPTIONS (path '...')` names the location too, as in Spark.
        let mut c = c;
        let path_option = c.options.keys().find(|k| k.eq_ignore_ascii_case("path")).cloned();
        if let Some(k) = path_option {
            let p = c.options.remove(&k).unwrap_or_default();
            c.location.get_or_insert(p);
        }
        if c.external && c.location.is_none() {
            return Err(SparkError::analysis(
                "INVALID_CATALOG_REQUEST",
                "CREATE EXTERNAL TABLE must name its LOCATION",
            ));
        }
        let managed = c.location.is_none();
        let location = match &c.location {
            Some(l) => dir_url(l, &s.user)?,
            None => self.managed_location(s, &db, &table).await?,
        };
        // Rows that replace the table's own go over them once complete.
        let same_place = replacing.as_ref().is_some_and(|o| o.location == location);
        let (dir, _) = tarn_jobs::commit::cluster_path(&location)
            .ok_or_else(|| SparkError::unsupported(format!("tables outside the cluster ({location})")))?;
        let has_data = match s.nn.list_dir(&dir, "", 1).await {
            Ok((entries, _)) => !entries.is_empty(),
            Err(e) if e.kind() == tarn_client::ErrorKind::NotFound => false,
            Err(e) => return Err(SparkError::internal(format!("look up {dir}: {e}"))),
        };
        let schema = if let Some(query) = &c.query {
            if c.columns.is_some() {
                return Err(SparkError::parse("a table's columns cannot be given with AS query"));
            }
            if has_data && !same_place {
                return Err(location_exists(&location));
            }
            let rel = sql_relation(query.clone());
            let w = sc::WriteOperation {
                input: Some(rel),
                source: Some(provider.clone()),
                options: c.options.clone().into_iter().collect(),
                partitioning_columns: c.partitioned_by.clone(),
                save_type: Some(sc::write_operation::SaveType::Path(location.clone())),
                mode: if same_place {
                    sc::write_operation::SaveMode::Overwrite
                } else {
                    sc::write_operation::SaveMode::ErrorIfExists
                } as i32,
                ..Default::default()
            };
            let written = self.write_path(r, &w, &location).await?;
            partitions_last(&written, &c.partitioned_by)?
        } else if let Some(cols) = &c.columns {
            if managed && has_data && !same_place {
                return Err(location_exists(&location));
            }
            let mut fields = Vec::new();
            for col in cols {
                let t = catalog::parse_type(&col.data_type)
                    .ok_or_else(|| SparkError::unsupported(format!("columns of type {} in tables", col.data_type)))?;
                fields.push(Field::new(&col.name, t, col.nullable));
            }
            let schema = partitions_last(&Schema::new(fields), &c.partitioned_by)?;
            if managed {
                s.nn.mkdirs(&dir).await.map_err(|e| SparkError::internal(format!("make {dir}: {e}")))?;
            }
            schema
        } else {
            // A managed table's place holds only what the table wrote: files already there
            // are not taken over (DROP TABLE would delete them).
            if managed && has_data && !same_place {
                return Err(location_exists(&location));
            }
            if !has_data {
                return Err(SparkError::analysis_with(
                    "UNABLE_TO_INFER_SCHEMA",
                    format!(
                        "Unable to infer schema for {}. It must be specified manually (no files at {location}).",
                        provider.to_uppercase()
                    ),
                    "42KD9",
                    &[("format", provider.to_uppercase())],
                ));
            }
            self.infer_schema(s, &location, &provider, &c).await?
        };
        let partition_by = spelled(&schema, &c.partitioned_by);
        let partition_by = if c.columns.is_none() && c.query.is_none() && partition_by.is_empty() {
            // Inferred from the directories.
            let n = schema.fields().len();
            let found = catalog::discover_partitions(&s.nn, &dir).await.map_err(catalog_error)?;
            schema.fields()[n - found.len()..].iter().map(|f| f.name().clone()).collect()
        } else {
            partition_by
        };
        let mut e = TableEntry::new(&db, &table, &location, &provider, &schema, partition_by, managed, &s.user)
            .map_err(catalog_error)?;
        e.options = c.options.clone();
        e.comment = c.comment.clone();
        if let Some(old) = replacing {
            s.catalog.replace_table(&e).await.map_err(catalog_error)?;
            if old.location != e.location {
                self.remove_data(s, &old).await?;
            }
            return Ok(());
        }
        if let Err(err) = s.catalog.create_table(&e, c.if_not_exists).await {
            if c.query.is_some() {
                // The rows just written belong to no table.
                let _ = s.nn.delete(&dir, true, None).await;
            }
            return Err(catalog_error(err));
        }
        Ok(())
    }

    /// The schema of the files at `location` (Spark's read of the format), with the
    /// partition columns of its `key=value` directories last.
    async fn infer_schema(
        &self,
        s: &Session,
        location: &str,
        provider: &str,
        c: &ddl::CreateTable,
    ) -> Result<Schema, SparkError> {
        let (dir, _) = tarn_jobs::commit::cluster_path(location).expect("a cluster path");
        let found = catalog::discover_partitions(&s.nn, &dir).await.map_err(catalog_error)?;
        if !c.partitioned_by.is_empty() {
            let named: Vec<String> = c.partitioned_by.iter().map(|p| p.to_ascii_lowercase()).collect();
            let there: Vec<String> = found.iter().map(|(k, _)| k.clone()).collect();
            if named != there {
                return Err(SparkError::analysis(
                    "PARTITION_SCHEMA_MISMATCH",
                    format!(
                        "PARTITIONED BY ({}) but the directories under {location} are partitioned by ({})",
                        named.join(", "),
                        there.join(", ")
                    ),
                ));
            }
        }
        let read = sc::Relation {
            common: None,
            rel_type: Some(sc::relation::RelType::Read(sc::Read {
                read_type: Some(sc::read::ReadType::DataSource(sc::read::DataSource {
                    format: Some(provider.into()),
                    paths: vec![location.into()],
                    options: c.options.clone().into_iter().collect(),
                    ..Default::default()
                })),
                ..Default::default()
            })),
        };
        let ctx = self.context(s)?;
        let home = home(&s.user);
        let plan = Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(&read).await?;
        let mut fields: Vec<Field> = plan
            .schema()
            .fields()
            .iter()
            .filter(|f| !found.iter().any(|(k, _)| k.eq_ignore_ascii_case(f.name())))
            .map(|f| {
                let t = match f.data_type() {
                    DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                    DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                    t => t.clone(),
                };
                Field::new(f.name(), t, true)
            })
            .collect();
        fields.extend(found.into_iter().map(|(k, t)| Field::new(k, t, true)));
        Ok(Schema::new(fields))
    }

    /// `df.write.saveAsTable(name)`: the rows written as a table's data, then its entry.
    pub(crate) async fn save_as_table(
        &self,
        r: &Responder<'_>,
        w: &sc::WriteOperation,
        t: &sc::write_operation::SaveTable,
    ) -> Result<(), SparkError> {
        use sc::write_operation::save_table::TableSaveMethod;
        use sc::write_operation::SaveMode;
        let s = r.s;
        let method = TableSaveMethod::try_from(t.save_method).unwrap_or(TableSaveMethod::Unspecified);
        let name = ddl::table_name(&t.table_name)?;
        let db = Self::database_of(s, &name)?;
        let table = names("table", &name.name)?;
        let mode = SaveMode::try_from(w.mode).unwrap_or(SaveMode::Unspecified);
        if method == TableSaveMethod::InsertInto {
            // By position, into the table as it is (its format, partitions and place).
            let e = s
                .catalog
                .table(&db, &table)
                .await
                .map_err(catalog_error)?
                .ok_or_else(|| not_found(&name.to_string()))?;
            return self.write_into_table(r, w, &e, false, mode == SaveMode::Overwrite).await;
        }
        let provider = w.source.clone().unwrap_or_else(|| "parquet".into()).to_ascii_lowercase();
        let mut replacing = None;
        if let Some(old) = self.new_table_place(s, &provider, &db, &table).await? {
            match mode {
                SaveMode::Unspecified | SaveMode::ErrorIfExists => {
                    return Err(exists(&format!("`spark_catalog`.`{db}`.`{table}`")))
                }
                SaveMode::Ignore => return Ok(()),
                // By name, into the table as it is.
                SaveMode::Append => return self.write_into_table(r, w, &old, true, false).await,
                SaveMode::Overwrite => {
                    // Spark refuses to replace a table the rows are read from.
                    let input = w.input.as_ref().ok_or_else(|| SparkError::invalid("a write without a relation"))?;
                    let ctx = self.context(s)?;
                    let home = home(&s.user);
                    let plan = Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(input).await?;
                    let old_dir = tarn_jobs::commit::cluster_path(&old.location).map(|(p, _)| p);
                    let reads_it = crate::service::input_files(&plan).iter().any(|f| {
                        let f = tarn_jobs::commit::cluster_path(f).map(|(p, _)| p);
                        f.zip(old_dir.as_ref()).is_some_and(|(f, d)| f == *d || f.starts_with(&format!("{d}/")))
                    });
                    if reads_it {
                        return Err(SparkError::analysis_with(
                            "UNSUPPORTED_OVERWRITE.TABLE",
                            format!("Can't overwrite the target `{db}`.`{table}` that is also being read from."),
                            "42902",
                            &[("table", format!("`spark_catalog`.`{db}`.`{table}`"))],
                        ));
                    }
                    // The table stays as it was until its new rows are complete.
                    replacing = Some(old);
                }
            }
        }
        let path = w.options.iter().find(|(k, _)| k.eq_ignore_ascii_case("path")).map(|(_, v)| v.clone());
        let managed = path.is_none();
        let location = match &path {
            Some(p) => dir_url(p, &s.user)?,
            None => self.managed_location(s, &db, &table).await?,
        };
        let mut write = w.clone();
        write.options.retain(|k, _| !k.eq_ignore_ascii_case("path"));
        write.save_type = Some(sc::write_operation::SaveType::Path(location.clone()));
        // A new managed table's place must be free; an external one's path is written as
        // the mode says; a table overwritten gets its data replaced once the new is complete.
        if replacing.is_some() {
            write.mode = SaveMode::Overwrite as i32;
        } else if managed || mode == SaveMode::Ignore {
            write.mode = SaveMode::ErrorIfExists as i32;
        }
        let written = match self.write_path(r, &write, &location).await {
            Err(e) if managed && e.error_class == "PATH_ALREADY_EXISTS" => return Err(location_exists(&location)),
            other => other?,
        };
        let schema = partitions_last(&written, &w.partitioning_columns)?;
        let partition_by = spelled(&schema, &w.partitioning_columns);
        let mut e = TableEntry::new(&db, &table, &location, &provider, &schema, partition_by, managed, &s.user)
            .map_err(catalog_error)?;
        e.options = write.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match replacing {
            Some(old) => {
                s.catalog.replace_table(&e).await.map_err(catalog_error)?;
                if old.location != e.location {
                    self.remove_data(s, &old).await?;
                }
            }
            None => {
                s.catalog.create_table(&e, false).await.map_err(catalog_error)?;
            }
        }
        Ok(())
    }

    /// Rows into an existing table: its columns matched by name (`saveAsTable` in mode
    /// append) or by position (`insertInto`), each of a type that converts to the
    /// column's without loss; appended (files added to its location), or replacing its
    /// data (`overwrite`).
    async fn write_into_table(
        &self,
        r: &Responder<'_>,
        w: &sc::WriteOperation,
        e: &TableEntry,
        by_name: bool,
        overwrite: bool,
    ) -> Result<(), SparkError> {
        use sc::expression::ExprType;
        use sc::write_operation::SaveMode;
        let s = r.s;
        let input = w.input.as_ref().ok_or_else(|| SparkError::invalid("a write without a relation"))?;
        let ctx = self.context(s)?;
        let home = home(&s.user);
        let planner = Planner { ctx: &ctx, home: &home, nn: &s.nn };
        let plan = planner.relation(input).await?;
        let want = e.schema().map_err(SparkError::from_datafusion)?;
        let table_name = format!("`spark_catalog`.`{}`.`{}`", e.database, e.name);
        let got = plan::column_names(&plan);
        let arity = |kind: &str| {
            SparkError::analysis_with(
                &format!("INSERT_COLUMN_ARITY_MISMATCH.{kind}"),
                format!(
                    "Cannot write to {table_name}: the table has {} columns, the data {}.",
                    want.fields().len(),
                    got.len()
                ),
                "21S01",
                &[("tableName", table_name.clone())],
            )
        };
        if got.len() > want.fields().len() {
            return Err(arity("TOO_MANY_DATA_COLUMNS"));
        }
        let rel = if by_name {
            if let Some(m) = want.fields().iter().find(|f| !got.iter().any(|g| g.eq_ignore_ascii_case(f.name()))) {
                return Err(SparkError::analysis_with(
                    "INCOMPATIBLE_DATA_FOR_TABLE.CANNOT_FIND_DATA",
                    format!("Cannot write incompatible data for the table {table_name}: Cannot find data for the output column `{}`.", m.name()),
                    "KD000",
                    &[("tableName", table_name.clone()), ("colName", format!("`{}`", m.name()))],
                ));
            }
            let attr = |c: &str| sc::Expression {
                expr_type: Some(ExprType::UnresolvedAttribute(sc::expression::UnresolvedAttribute {
                    unparsed_identifier: format!("`{c}`"),
                    ..Default::default()
                })),
                ..Default::default()
            };
            sc::Relation {
                common: None,
                rel_type: Some(sc::relation::RelType::Project(Box::new(sc::Project {
                    input: Some(Box::new(input.clone())),
                    expressions: want.fields().iter().map(|f| attr(f.name())).collect(),
                }))),
            }
        } else {
            if got.len() < want.fields().len() {
                return Err(arity("NOT_ENOUGH_DATA_COLUMNS"));
            }
            sc::Relation {
                common: None,
                rel_type: Some(sc::relation::RelType::ToDf(Box::new(sc::ToDf {
                    input: Some(Box::new(input.clone())),
                    column_names: want.fields().iter().map(|f| f.name().clone()).collect(),
                }))),
            }
        };
        let planned = planner.relation(&rel).await?;
        for (g, t) in planned.schema().fields().iter().zip(want.fields()) {
            if !assignable(g.data_type(), t.data_type()) {
                return Err(SparkError::analysis_with(
                    "INCOMPATIBLE_DATA_FOR_TABLE.CANNOT_SAFELY_CAST",
                    format!(
                        "Cannot write incompatible data for the table {table_name}: Cannot safely cast `{}` {} to {}.",
                        t.name(),
                        catalog::type_name(g.data_type()).unwrap_or_else(|| g.data_type().to_string()),
                        catalog::type_name(t.data_type()).unwrap_or_else(|| t.data_type().to_string()),
                    ),
                    "KD000",
                    &[("tableName", table_name.clone()), ("colName", format!("`{}`", t.name()))],
                ));
            }
        }
        // The table's own format options that a write takes.
        let options = e
            .options
            .iter()
            .filter(|(k, _)| ["header", "sep", "delimiter", "compression"].contains(&k.to_ascii_lowercase().as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let write = sc::WriteOperation {
            input: Some(rel),
            source: Some(e.provider.clone()),
            options,
            partitioning_columns: e.partition_columns.clone(),
            save_type: Some(sc::write_operation::SaveType::Path(e.location.clone())),
            mode: if overwrite { SaveMode::Overwrite } else { SaveMode::Append } as i32,
            ..Default::default()
        };
        self.write_path(r, &write, &e.location).await.map(|_| ())
    }

    /// `spark.catalog.*`: their rows, in the columns PySpark reads.
    pub(crate) async fn catalog_call(&self, s: &Session, c: &sc::Catalog) -> Result<RecordBatch, SparkError> {
        use sc::catalog::CatType;
        let cat = &s.catalog;
        let Some(t) = &c.cat_type else { return Err(SparkError::invalid("a catalog call without a type")) };
        let one_bool = |v: bool| batch(vec![Col::Bool("value", vec![v])]);
        match t {
            CatType::CurrentCatalog(_) => batch(vec![Col::Str("value", vec![Some(catalog::CATALOG_NAME.into())])]),
            CatType::SetCurrentCatalog(x) if x.catalog_name == catalog::CATALOG_NAME => Ok(no_rows()),
            CatType::ListCatalogs(_) => batch(vec![
                Col::Str("name", vec![Some(catalog::CATALOG_NAME.into())]),
                Col::Str("description", vec![None]),
            ]),
            CatType::CurrentDatabase(_) => {
                batch(vec![Col::Str("value", vec![Some(s.database.lock().expect("database").clone())])])
            }
            CatType::SetCurrentDatabase(x) => {
                let name = names("database", &x.db_name)?;
                if cat.database(&name).await.map_err(catalog_error)?.is_none() {
                    return Err(catalog_error(CatalogError::NoDatabase(name)));
                }
                *s.database.lock().expect("database") = name;
                self.persist(s).await?;
                Ok(no_rows())
            }
            CatType::ListDatabases(x) => {
                let mut rows = Vec::new();
                for d in cat.databases().await.map_err(catalog_error)? {
                    if x.pattern.as_ref().is_some_and(|p| !ddl::like(p, &d)) {
                        continue;
                    }
                    if let Some(e) = cat.database(&d).await.map_err(catalog_error)? {
                        rows.push(e);
                    }
                }
                database_rows(&rows)
            }
            CatType::GetDatabase(x) => {
                let name = names("database", &x.db_name)?;
                let e = cat
                    .database(&name)
                    .await
                    .map_err(catalog_error)?
                    .ok_or_else(|| catalog_error(CatalogError::NoDatabase(name)))?;
                database_rows(&[e])
            }
            CatType::DatabaseExists(x) => {
                let name = names("database", &x.db_name)?;
                one_bool(cat.database(&name).await.map_err(catalog_error)?.is_some())
            }
            CatType::ListTables(x) => {
                let db = match &x.db_name {
                    Some(d) => names("database", d)?,
                    None => s.database.lock().expect("database").clone(),
                };
                let mut entries = Vec::new();
                let mut tables = cat.tables(&db).await.map_err(catalog_error)?;
                tables.sort();
                for t in tables {
                    if x.pattern.as_ref().is_some_and(|p| !ddl::like(p, &t)) {
                        continue;
                    }
                    if let Some(e) = cat.table(&db, &t).await.map_err(catalog_error)? {
                        entries.push(e);
                    }
                }
                let mut views: Vec<String> = s.views.lock().expect("views").keys().cloned().collect();
                views.sort();
                views.retain(|v| x.pattern.as_ref().is_none_or(|p| ddl::like(p, v)));
                table_rows(&entries, &views)
            }
            CatType::GetTable(x) => {
                let name = ddl::table_name(&x.table_name)?;
                if name.db.is_none() && s.views.lock().expect("views").contains_key(&name.name.to_lowercase()) {
                    return table_rows(&[], &[name.name.to_lowercase()]);
                }
                let db = match (&name.db, &x.db_name) {
                    (Some(d), _) | (None, Some(d)) => names("database", d)?,
                    (None, None) => s.database.lock().expect("database").clone(),
                };
                let e = cat
                    .table(&db, &names("table", &name.name)?)
                    .await
                    .map_err(catalog_error)?
                    .ok_or_else(|| not_found(&name.to_string()))?;
                table_rows(&[e], &[])
            }
            CatType::TableExists(x) => {
                let name = ddl::table_name(&x.table_name)?;
                if name.db.is_none()
                    && x.db_name.is_none()
                    && s.views.lock().expect("views").contains_key(&name.name.to_lowercase())
                {
                    return one_bool(true);
                }
                let db = match (&name.db, &x.db_name) {
                    (Some(d), _) | (None, Some(d)) => names("database", d)?,
                    (None, None) => s.database.lock().expect("database").clone(),
                };
                let Ok(table) = catalog::check_name("table", &name.name) else { return one_bool(false) };
                one_bool(cat.table(&db, &table).await.map_err(catalog_error)?.is_some())
            }
            CatType::ListColumns(x) => {
                let name = ddl::table_name(&x.table_name)?;
                let name = Name { db: name.db.or(x.db_name.clone()), name: name.name };
                let d = self.describe(s, &name, false).await?;
                let (names_col, types_col) = (d.column(0), d.column(1));
                let (names_col, types_col) = (
                    names_col.as_any().downcast_ref::<StringArray>().expect("strings"),
                    types_col.as_any().downcast_ref::<StringArray>().expect("strings"),
                );
                let mut parts = Vec::new();
                let mut in_parts = false;
                let (mut n, mut t) = (Vec::new(), Vec::new());
                for i in 0..d.num_rows() {
                    let c = names_col.value(i);
                    if c == "# Partition Information" {
                        in_parts = true;
                        continue;
                    }
                    if c.starts_with('#') {
                        continue;
                    }
                    if in_parts {
                        parts.push(c.to_string());
                    } else {
                        n.push(Some(c.to_string()));
                        t.push(Some(types_col.value(i).to_string()));
                    }
                }
                let rows = n.len();
                let is_part = n.iter().map(|c| c.as_ref().is_some_and(|c| parts.contains(c))).collect();
                batch(vec![
                    Col::Str("name", n),
                    Col::Str("description", vec![None; rows]),
                    Col::Str("dataType", t),
                    Col::Bool("nullable", vec![true; rows]),
                    Col::Bool("isPartition", is_part),
                    Col::Bool("isBucket", vec![false; rows]),
                    Col::Bool("isCluster", vec![false; rows]),
                ])
            }
            CatType::DropTempView(x) => {
                let dropped = s.drop_view(&x.view_name);
                if dropped {
                    self.persist(s).await?;
                }
                one_bool(dropped)
            }
            CatType::DropGlobalTempView(_) => one_bool(false),
            CatType::RefreshTable(_)
            | CatType::RecoverPartitions(_)
            | CatType::ClearCache(_)
            | CatType::RefreshByPath(_) => Ok(no_rows()),
            other => {
                let d = format!("{other:?}");
                Err(SparkError::unsupported(format!("spark.catalog's {}", d.split('(').next().unwrap_or("?"))))
            }
        }
    }
}

/// Whether values of type `from` go into a column of type `to` without loss (Spark's
/// ANSI store assignment, the widening part).
fn assignable(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let norm = |t: &DataType| match t {
        Utf8View | LargeUtf8 => Utf8,
        BinaryView | LargeBinary => Binary,
        t => t.clone(),
    };
    let (from, to) = (norm(from), norm(to));
    let int_rank = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(3),
        Int64 => Some(4),
        _ => None,
    };
    match (&from, &to) {
        _ if from == to => true,
        (Null, _) => true,
        (f, t) if int_rank(f).is_some() && int_rank(t).is_some() => int_rank(f) <= int_rank(t),
        (f, Float64) => int_rank(f).is_some() || *f == Float32,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => s1 <= s2 && (*p1 as i16 - *s1 as i16) <= (*p2 as i16 - *s2 as i16),
        _ => false,
    }
}

/// `names` as `schema` spells them (names resolve ignoring case).
fn spelled(schema: &Schema, names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|p| {
            schema
                .fields()
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(p))
                .map(|f| f.name().clone())
                .unwrap_or_else(|| p.clone())
        })
        .collect()
}

/// A table's location as a directory URL (relative paths under the user's home).
fn dir_url(path: &str, user: &str) -> Result<String, SparkError> {
    let mut u = plan::resolve_path(path, &home(user))?;
    if !u.ends_with('/') {
        u.push('/');
    }
    Ok(u)
}

fn location_exists(location: &str) -> SparkError {
    SparkError::analysis_with(
        "LOCATION_ALREADY_EXISTS",
        format!("Cannot name the managed table as its associated location {location} already exists. Please pick a different table name, or remove the existing location first."),
        "42710",
        &[("location", location.to_string())],
    )
}

/// A `spark.sql` query as a relation.
fn sql_relation(query: String) -> sc::Relation {
    #[allow(deprecated)]
    sc::Relation { common: None, rel_type: Some(sc::relation::RelType::Sql(sc::Sql { query, ..Default::default() })) }
}

fn database_rows(rows: &[DatabaseEntry]) -> Result<RecordBatch, SparkError> {
    batch(vec![
        Col::Str("name", rows.iter().map(|e| Some(e.name.clone())).collect()),
        Col::Str("catalog", rows.iter().map(|_| Some(catalog::CATALOG_NAME.to_string())).collect()),
        Col::Str("description", rows.iter().map(|e| e.comment.clone()).collect()),
        Col::Str("locationUri", rows.iter().map(|e| e.location.clone()).collect()),
    ])
}

fn table_rows(entries: &[TableEntry], views: &[String]) -> Result<RecordBatch, SparkError> {
    let mut name: Vec<Option<String>> = entries.iter().map(|e| Some(e.name.clone())).collect();
    name.extend(views.iter().map(|v| Some(v.clone())));
    let n = name.len();
    let mut catalog_col: Vec<Option<String>> =
        entries.iter().map(|_| Some(catalog::CATALOG_NAME.to_string())).collect();
    catalog_col.extend(views.iter().map(|_| None));
    let mut ns: Vec<Vec<String>> = entries.iter().map(|e| vec![e.database.clone()]).collect();
    ns.extend(views.iter().map(|_| Vec::new()));
    let mut desc: Vec<Option<String>> = entries.iter().map(|e| e.comment.clone()).collect();
    desc.extend(views.iter().map(|_| None));
    let mut kind: Vec<Option<String>> =
        entries.iter().map(|e| Some(if e.managed { "MANAGED" } else { "EXTERNAL" }.to_string())).collect();
    kind.extend(views.iter().map(|_| Some("TEMPORARY".to_string())));
    let temp = (0..n).map(|i| i >= entries.len()).collect();
    batch(vec![
        Col::Str("name", name),
        Col::Str("catalog", catalog_col),
        Col::Strs("namespace", ns),
        Col::Str("description", desc),
        Col::Str("tableType", kind),
        Col::Bool("isTemporary", temp),
    ])
}
