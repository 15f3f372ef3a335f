//! Spark's data types and Arrow's: the schema PySpark is told, and the Arrow it can read.
//!
//! PySpark reads Utf8 / Binary / Decimal128 / microsecond timestamps, not the view types
//! and nanosecond timestamps DataFusion produces: [`for_spark`] casts results to the
//! former before they are sent.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use spark_connect_proto::spark::connect::data_type::{self as dt, Kind};
use spark_connect_proto::spark::connect::DataType as SparkType;

use crate::errors::SparkError;

/// Spark's type for an Arrow type (`None`: Spark has none).
pub fn to_spark(t: &DataType) -> Option<SparkType> {
    let kind = match t {
        DataType::Null => Kind::Null(dt::Null::default()),
        DataType::Boolean => Kind::Boolean(dt::Boolean::default()),
        DataType::Int8 => Kind::Byte(dt::Byte::default()),
        DataType::Int16 | DataType::UInt8 => Kind::Short(dt::Short::default()),
        DataType::Int32 | DataType::UInt16 => Kind::Integer(dt::Integer::default()),
        DataType::Int64 | DataType::UInt32 => Kind::Long(dt::Long::default()),
        DataType::UInt64 => Kind::Decimal(dt::Decimal { scale: Some(0), precision: Some(20), ..Default::default() }),
        DataType::Float16 | DataType::Float32 => Kind::Float(dt::Float::default()),
        DataType::Float64 => Kind::Double(dt::Double::default()),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            Kind::Decimal(dt::Decimal { scale: Some(*s as i32), precision: Some(*p as i32), ..Default::default() })
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::String(dt::String::default()),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            Kind::Binary(dt::Binary::default())
        }
        DataType::Date32 | DataType::Date64 => Kind::Date(dt::Date::default()),
        DataType::Timestamp(_, Some(_)) => Kind::Timestamp(dt::Timestamp::default()),
        DataType::Timestamp(_, None) => Kind::TimestampNtz(dt::TimestampNtz::default()),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::FixedSizeList(f, _) => {
            Kind::Array(Box::new(dt::Array {
                element_type: Some(Box::new(to_spark(f.data_type())?)),
                contains_null: f.is_nullable(),
                ..Default::default()
            }))
        }
        DataType::Struct(fields) => Kind::Struct(struct_of(fields)?),
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else { return None };
            if kv.len() != 2 {
                return None;
            }
            Kind::Map(Box::new(dt::Map {
                key_type: Some(Box::new(to_spark(kv[0].data_type())?)),
                value_type: Some(Box::new(to_spark(kv[1].data_type())?)),
                value_contains_null: kv[1].is_nullable(),
                ..Default::default()
            }))
        }
        DataType::Dictionary(_, v) => return to_spark(v),
        _ => return None,
    };
    Some(SparkType { kind: Some(kind) })
}

fn struct_of(fields: &Fields) -> Option<dt::Struct> {
    let fields = fields
        .iter()
        .map(|f| {
            Some(dt::StructField {
                name: f.name().clone(),
                data_type: Some(to_spark(f.data_type())?),
                nullable: f.is_nullable(),
                metadata: None,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(dt::Struct { fields, ..Default::default() })
}

/// A schema as Spark's struct type.
pub fn schema_to_spark(schema: &Schema) -> Result<SparkType, SparkError> {
    for f in schema.fields() {
        if to_spark(f.data_type()).is_none() {
            return Err(SparkError::unsupported(format!("column `{}` of type {}", f.name(), f.data_type())));
        }
    }
    let s = struct_of(schema.fields()).expect("checked above");
    Ok(SparkType { kind: Some(Kind::Struct(s)) })
}

/// The Arrow type of a Spark type.
pub fn from_spark(t: &SparkType) -> Result<DataType, SparkError> {
    let Some(kind) = &t.kind else { return Err(SparkError::invalid("a data type without a kind")) };
    Ok(match kind {
        Kind::Null(_) => DataType::Null,
        Kind::Boolean(_) => DataType::Boolean,
        Kind::Byte(_) => DataType::Int8,
        Kind::Short(_) => DataType::Int16,
        Kind::Integer(_) => DataType::Int32,
        Kind::Long(_) => DataType::Int64,
        Kind::Float(_) => DataType::Float32,
        Kind::Double(_) => DataType::Float64,
        Kind::Decimal(d) => DataType::Decimal128(d.precision.unwrap_or(10) as u8, d.scale.unwrap_or(0) as i8),
        Kind::String(_) | Kind::Char(_) | Kind::VarChar(_) => DataType::Utf8,
        Kind::Binary(_) => DataType::Binary,
        Kind::Date(_) => DataType::Date32,
        Kind::Timestamp(_) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::TimestampNtz(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        Kind::Array(a) => {
            let e = a.element_type.as_deref().ok_or_else(|| SparkError::invalid("an array type without elements"))?;
            DataType::List(Arc::new(Field::new("element", from_spark(e)?, a.contains_null)))
        }
        Kind::Struct(s) => DataType::Struct(
            s.fields
                .iter()
                .map(|f| {
                    let t = f.data_type.as_ref().ok_or_else(|| SparkError::invalid("a struct field without a type"))?;
                    Ok(Field::new(&f.name, from_spark(t)?, f.nullable))
                })
                .collect::<Result<Vec<_>, SparkError>>()?
                .into(),
        ),
        Kind::Unparsed(u) => return from_ddl(&u.data_type_string),
        other => return Err(SparkError::unsupported(format!("data type {other:?}"))),
    })
}

/// The Arrow type of a Spark SQL type name (`int`, `string`, `decimal(10,2)`, ...).
pub fn from_ddl(s: &str) -> Result<DataType, SparkError> {
    if let Some(t) = tarn_jobs::catalog::parse_type(s) {
        return Ok(t);
    }
    if s.trim().to_ascii_lowercase().starts_with("decimal(") {
        return Err(SparkError::parse(format!("the data type {s:?}")));
    }
    Err(SparkError::unsupported(format!("the data type {s:?}")))
}

/// The type PySpark reads for `t` (see the module's note).
fn spark_arrow(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary | DataType::FixedSizeBinary(_) => DataType::Binary,
        // PySpark reads no unsigned integers: the next wider signed type (as announced).
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::ListView(f) | DataType::FixedSizeList(f, _) | DataType::LargeListView(f) => {
            DataType::List(Arc::new(Field::new(f.name(), spark_arrow(f.data_type()), f.is_nullable())))
        }
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Date64 => DataType::Date32,
        DataType::Dictionary(_, v) => spark_arrow(v),
        DataType::List(f) | DataType::LargeList(f) => {
            DataType::List(Arc::new(Field::new(f.name(), spark_arrow(f.data_type()), f.is_nullable())))
        }
        DataType::Struct(fs) => DataType::Struct(
            fs.iter()
                .map(|f| Field::new(f.name(), spark_arrow(f.data_type()), f.is_nullable()))
                .collect::<Vec<_>>()
                .into(),
        ),
        other => other.clone(),
    }
}

/// The schema PySpark reads for `schema`.
pub fn spark_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), spark_arrow(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ))
}

/// `batch` cast to what PySpark reads (`schema` = [`spark_schema`] of its schema).
pub fn for_spark(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, SparkError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SparkError::internal(format!("results for the client: {e}")))?;
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| SparkError::internal(format!("results for the client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_strings_and_timestamps_map_both_ways() {
        for t in [
            DataType::Int64,
            DataType::Decimal128(25, 2),
            DataType::Utf8,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ] {
            let s = to_spark(&t).unwrap();
            assert_eq!(from_spark(&s).unwrap(), t, "{t}");
        }
        assert_eq!(spark_arrow(&DataType::Utf8View), DataType::Utf8);
        assert_eq!(
            spark_arrow(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(from_ddl("decimal(15, 2)").unwrap(), DataType::Decimal128(15, 2));
        assert!(from_ddl("interval").is_err());
    }
}
