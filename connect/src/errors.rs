//! Errors as PySpark raises them: a gRPC status whose details carry a `google.rpc.ErrorInfo`
//! naming Spark's exception class, error class, message parameters and SQL state, so the
//! client raises `AnalysisException`, `ParseException`, ... with Spark's fields.

use std::collections::HashMap;

use prost::Message;

/// What went wrong, as Spark names it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("[{error_class}] {message}")]
pub struct SparkError {
    /// The JVM class PySpark maps to its exception (`org.apache.spark.sql.AnalysisException`).
    pub class: &'static str,
    pub error_class: String,
    pub message: String,
    pub sql_state: String,
    pub parameters: Vec<(String, String)>,
    pub code: tonic::Code,
}

const ANALYSIS: &str = "org.apache.spark.sql.AnalysisException";
const PARSE: &str = "org.apache.spark.sql.catalyst.parser.ParseException";
const ILLEGAL_ARGUMENT: &str = "java.lang.IllegalArgumentException";
const UNSUPPORTED: &str = "java.lang.UnsupportedOperationException";
const SPARK: &str = "org.apache.spark.SparkException";
const ARITHMETIC: &str = "org.apache.spark.SparkArithmeticException";

impl SparkError {
    /// An AnalysisException of `error_class`.
    pub fn analysis(error_class: &str, message: impl Into<String>) -> SparkError {
        Self::analysis_with(error_class, message, "42000", &[])
    }

    pub fn analysis_with(
        error_class: &str,
        message: impl Into<String>,
        sql_state: &str,
        parameters: &[(&str, String)],
    ) -> SparkError {
        SparkError {
            class: ANALYSIS,
            error_class: error_class.into(),
            message: message.into(),
            sql_state: sql_state.into(),
            parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            code: tonic::Code::Internal,
        }
    }

    /// Something Tarn does not translate yet: refused before anything runs, naming it.
    pub fn unsupported(what: impl Into<String>) -> SparkError {
        let what = what.into();
        SparkError {
            class: ANALYSIS,
            error_class: "UNSUPPORTED_FEATURE".into(),
            message: format!("Tarn's Spark Connect endpoint does not support {what} yet."),
            sql_state: "0A000".into(),
            parameters: vec![("feature".into(), what)],
            code: tonic::Code::Internal,
        }
    }

    /// A malformed request.
    pub fn invalid(what: impl Into<String>) -> SparkError {
        SparkError {
            class: ILLEGAL_ARGUMENT,
            error_class: "INVALID_REQUEST".into(),
            message: what.into(),
            sql_state: "22023".into(),
            parameters: Vec::new(),
            code: tonic::Code::InvalidArgument,
        }
    }

    pub fn parse(what: impl Into<String>) -> SparkError {
        SparkError {
            class: PARSE,
            error_class: "PARSE_SYNTAX_ERROR".into(),
            message: format!("Syntax error: {}", what.into()),
            sql_state: "42601".into(),
            parameters: Vec::new(),
            code: tonic::Code::Internal,
        }
    }

    /// The job failed while it ran.
    pub fn internal(what: impl Into<String>) -> SparkError {
        SparkError {
            class: SPARK,
            error_class: "INTERNAL_ERROR".into(),
            message: what.into(),
            sql_state: "XX000".into(),
            parameters: Vec::new(),
            code: tonic::Code::Internal,
        }
    }

    /// A running job's failure: overflow is Spark's ARITHMETIC_OVERFLOW, the rest internal.
    pub fn run(what: impl Into<String>) -> SparkError {
        let what = what.into();
        if what.contains("Overflow") || what.contains("overflow") {
            return SparkError {
                class: ARITHMETIC,
                error_class: "ARITHMETIC_OVERFLOW".into(),
                message: what,
                sql_state: "22003".into(),
                parameters: Vec::new(),
                code: tonic::Code::Internal,
            };
        }
        Self::internal(what)
    }

    pub fn not_supported_op(what: impl Into<String>) -> SparkError {
        SparkError {
            class: UNSUPPORTED,
            error_class: "UNSUPPORTED_FEATURE".into(),
            message: what.into(),
            sql_state: "0A000".into(),
            parameters: Vec::new(),
            code: tonic::Code::Unimplemented,
        }
    }

    /// DataFusion's refusal while planning: a parse error or an analysis error.
    pub fn from_datafusion(e: datafusion::error::DataFusionError) -> SparkError {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::SQL(p, _) => Self::parse(p.to_string()),
            E::SchemaError(s, _) => Self::analysis("UNRESOLVED_COLUMN", s.to_string()),
            E::Plan(m) => Self::analysis("PLAN_ERROR", m.clone()),
            E::NotImplemented(m) => Self::unsupported(m.clone()),
            other => Self::analysis("ANALYSIS_ERROR", other.to_string()),
        }
    }

    /// The gRPC status PySpark turns into this exception.
    pub fn to_status(&self) -> tonic::Status {
        let params: HashMap<&str, &str> = self.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let classes = match self.class {
            ANALYSIS => vec![ANALYSIS, "java.lang.Exception", "java.lang.Throwable"],
            PARSE => vec![PARSE, ANALYSIS, "java.lang.Exception", "java.lang.Throwable"],
            c => vec![c, "java.lang.Exception", "java.lang.Throwable"],
        };
        let mut metadata = HashMap::new();
        metadata.insert("classes".to_string(), serde_json::to_string(&classes).unwrap_or_default());
        metadata.insert("errorClass".to_string(), self.error_class.clone());
        metadata.insert("sqlState".to_string(), self.sql_state.clone());
        metadata.insert("messageParameters".to_string(), serde_json::to_string(&params).unwrap_or_default());
        let info = ErrorInfo { reason: self.class.to_string(), domain: "org.apache.spark".into(), metadata };
        let message = format!("[{}] {} SQLSTATE: {}", self.error_class, self.message, self.sql_state);
        let status = RpcStatus {
            code: self.code as i32,
            message: message.clone(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(self.code, message, status.encode_to_vec().into())
    }
}

impl From<SparkError> for tonic::Status {
    fn from(e: SparkError) -> tonic::Status {
        e.to_status()
    }
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_carries_spark_s_error_info() {
        let e = SparkError::analysis_with(
            "PATH_NOT_FOUND",
            "Path does not exist: s3://b/x.",
            "42K03",
            &[("path", "s3://b/x".into())],
        );
        let s = e.to_status();
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(s.message().starts_with("[PATH_NOT_FOUND] Path does not exist"));
        let st = RpcStatus::decode(s.details()).unwrap();
        assert_eq!(st.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
        let info = ErrorInfo::decode(st.details[0].value.as_slice()).unwrap();
        assert_eq!(info.reason, ANALYSIS);
        assert_eq!(info.metadata["errorClass"], "PATH_NOT_FOUND");
        assert_eq!(info.metadata["sqlState"], "42K03");
        assert!(info.metadata["classes"].contains("AnalysisException"));
        assert_eq!(info.metadata["messageParameters"], r#"{"path":"s3://b/x"}"#);
    }
}
