//! `DataFrame.show()`: rows as Spark's ASCII table (`Dataset.showString`).

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::errors::SparkError;

/// The first `n` rows of `batches` (which may hold one more, to tell there are more) as
/// Spark prints them: cells cut to `truncate` characters (0: whole) and right-aligned
/// when cut, `NULL` for nulls, a footer when rows were left out.
pub fn render(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    n: usize,
    truncate: usize,
    vertical: bool,
) -> Result<String, SparkError> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut more = false;
    'all: for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SparkError::internal(format!("show: {e}")))?;
        for i in 0..b.num_rows() {
            if rows.len() == n {
                more = true;
                break 'all;
            }
            let row = fmts
                .iter()
                .zip(b.columns())
                .map(|(f, c)| cell(&f.value(i).to_string(), c.data_type(), c.is_null(i), truncate))
                .collect();
            rows.push(row);
        }
    }
    let names: Vec<String> = schema.fields().iter().map(|f| cut(f.name(), truncate)).collect();
    let mut out = String::new();
    if vertical {
        let width = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        for (r, row) in rows.iter().enumerate() {
            out.push_str(&format!("-RECORD {r}{}\n", "-".repeat(20)));
            for (name, v) in names.iter().zip(row) {
                out.push_str(&format!(" {name:<width$} | {v} \n"));
            }
        }
        if rows.is_empty() {
            out.push_str("(0 rows)\n");
        }
    } else {
        let mut widths: Vec<usize> = names.iter().map(|s| s.chars().count().max(3)).collect();
        for row in &rows {
            for (w, v) in widths.iter_mut().zip(row) {
                *w = (*w).max(v.chars().count());
            }
        }
        let sep: String = widths.iter().fold(String::from("+"), |s, w| s + &"-".repeat(*w) + "+") + "\n";
        let line = |cells: &[String]| -> String {
            let mut l = String::from("|");
            for (v, w) in cells.iter().zip(&widths) {
                let pad = w - v.chars().count();
                if truncate > 0 {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(v);
                } else {
                    l.push_str(v);
                    l.push_str(&" ".repeat(pad));
                }
                l.push('|');
            }
            l + "\n"
        };
        out.push_str(&sep);
        out.push_str(&line(&names));
        out.push_str(&sep);
        for row in &rows {
            out.push_str(&line(row));
        }
        out.push_str(&sep);
    }
    if more {
        out.push_str(&format!("only showing top {n} row{}\n", if n == 1 { "" } else { "s" }));
    }
    Ok(out)
}

fn cut(s: &str, truncate: usize) -> String {
    if truncate == 0 || s.chars().count() <= truncate {
        return s.to_string();
    }
    if truncate < 4 {
        return s.chars().take(truncate).collect();
    }
    s.chars().take(truncate - 3).collect::<String>() + "..."
}

/// A cell as Spark shows it (binary as hex bytes in brackets).
fn cell(v: &str, t: &DataType, null: bool, truncate: usize) -> String {
    if null {
        return "NULL".into();
    }
    let v = match t {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let hex: Vec<String> =
                v.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_ascii_uppercase()).collect();
            format!("[{}]", hex.join(" "))
        }
        _ => v.to_string(),
    };
    cut(&v, truncate)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn a_table_as_spark_prints_it() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("a"), Some("a very long name indeed, longer"), None])),
            ],
        )
        .unwrap();
        let got = render(&schema, &[b], 2, 20, false).unwrap();
        let want = "+-----------+--------------------+\n\
                    |customer_id|                name|\n\
                    +-----------+--------------------+\n\
                    |          1|                   a|\n\
                    |       NULL|a very long name ...|\n\
                    +-----------+--------------------+\n\
                    only showing top 2 rows\n";
        assert_eq!(got, want);
    }
}
