//! What an S3 request can fail with, and the one place that says which S3 error each is.
//!
//! Operations, their helpers, `names.rs` and `lib.rs`'s access checks fail with
//! [`ApiError`]: a namespace or block error as the client library reported it, a failure
//! of the request body, an internal error, or a refusal named by what was refused.
//! `impl From<ApiError> for S3Error` alone chooses the S3 error code, the HTTP status
//! where S3 has no standard code for it, and the message; nothing matches on the text of
//! an error to choose one, except where s3s gives no type to match (see [`BodyError`]).

use s3s::{S3Error, S3ErrorCode, StdError};
use tarn_client::{ClientError, ErrorKind};

/// A failed S3 request, by what failed. Converted into the S3 error the client sees by
/// `From<ApiError> for S3Error`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A namespace or block operation (`what`) failed; its [`ErrorKind`] decides the code.
    #[error("{what}: {source}")]
    Fs { what: &'static str, source: ClientError },
    /// The request body could not be read in full, or failed s3s's checks as it streamed.
    #[error("request body: {0}")]
    Body(#[from] BodyError),
    /// Something the client cannot fix (a lookup the gateway depends on failed).
    #[error("{0}")]
    Internal(String),

    // Refusals of the request, each the S3 error of the same name unless said otherwise.
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    InvalidAccessKeyId(String),
    /// A presigned URL's `X-Amz-Expires` is out of bounds (AuthorizationQueryParametersError).
    #[error("{0}")]
    AuthorizationQuery(String),
    #[error("no bucket {0:?}")]
    NoSuchBucket(String),
    #[error("no object {key:?} in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("{0}")]
    NoSuchUpload(String),
    /// Versioning is never on: only version "null" exists (NoSuchVersion).
    #[error("versioning is off: only version \"null\" exists")]
    NoSuchVersion,
    #[error("bucket {0:?} exists and is yours")]
    BucketAlreadyOwnedByYou(String),
    #[error("bucket {0:?} exists")]
    BucketAlreadyExists(String),
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// A copy source's read condition failed (PreconditionFailed, never NotModified).
    #[error("a condition on the copy source failed")]
    CopySourceCondition,
    /// A read's If-None-Match or If-Modified-Since holds (304 NotModified).
    #[error("not modified")]
    NotModified,
    /// A GET's Range lies outside the object (InvalidRange).
    #[error("the range is not satisfiable")]
    RangeNotSatisfiable,
    #[error("{0}")]
    BadDigest(String),
    #[error("{0}")]
    InvalidDigest(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRange(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidPart(String),
    #[error("{0}")]
    InvalidTag(String),
    /// A `partNumber` the object does not have (416 InvalidPartNumber).
    #[error("{0}")]
    InvalidPartNumber(String),
    #[error("{0}")]
    NoSuchTagSet(String),
    /// NoSuchCORSConfiguration.
    #[error("{0}")]
    NoSuchCorsConfiguration(String),
    /// A preflight no CORS rule allows (403 AccessForbidden); BadRequest (400) is also
    /// what S3 answers for a preflight without what it must carry and for too many tags.
    #[error("{0}")]
    CorsForbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidPartOrder(String),
    #[error("{0}")]
    EntityTooLarge(String),
    #[error("{0}")]
    EntityTooSmall(String),
    #[error("{0}")]
    IncompleteBody(String),
    /// MalformedXML.
    #[error("{0}")]
    MalformedXml(String),
    #[error("{0}")]
    NotImplemented(String),
}

impl ApiError {
    /// A namespace or block error met while doing `what` ("list", "commit", ...).
    pub(crate) fn fs(what: &'static str) -> impl FnOnce(ClientError) -> ApiError {
        move |source| ApiError::Fs { what, source }
    }

    /// An internal error met while doing `what`.
    pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(format!("{what}: {e}"))
    }
}

/// A failure of the request body stream. s3s verifies a signed body as it streams it: the
/// payload's SHA-256 (`x-amz-content-sha256`, also on presigned PUTs) and each aws-chunked
/// chunk's signature; a body may also end early (the client went away).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The payload's SHA-256 is not the one signed (XAmzContentSHA256Mismatch, 400).
    #[error("{0}")]
    Sha256Mismatch(StdError),
    /// An aws-chunked chunk's signature does not match (SignatureDoesNotMatch).
    #[error("{0}")]
    SignatureMismatch(StdError),
    /// The body ended early, was malformed, or its connection failed (IncompleteBody).
    #[error("{0}")]
    Incomplete(StdError),
}

impl BodyError {
    /// Classifies an error of a request body's stream (`StreamingBlob`'s item).
    pub(crate) fn classify(e: StdError) -> BodyError {
        // By type where there is one: the connection's own error (a client gone mid-body,
        // a plain body), and the streams the gateway makes itself (a copy's source).
        if e.is::<hyper::Error>() || e.is::<std::io::Error>() {
            return BodyError::Incomplete(e);
        }
        // By text where s3s 0.14.1 gives no type: it reports a SHA-256 mismatch as
        // `UploadStreamError::Sha256Mismatch` (`s3s::sig_v4`) and a bad chunk signature as
        // `AwsChunkedStreamError::SignatureMismatch` (`s3s::http`), both in private
        // modules, so they cannot be named to downcast to, and neither has a `source()`.
        // Their Display is "<type>: <variant>", e.g. "UploadStreamError: Sha256Mismatch".
        // Revisit when s3s exports them. The texts are s3s 0.14.1's, which Cargo.toml
        // pins exactly; `error_texts_of_s3s_body_streams` shows how each is taken.
        let text = e.to_string();
        if text.contains("Sha256Mismatch") {
            BodyError::Sha256Mismatch(e)
        } else if text.contains("SignatureMismatch") {
            BodyError::SignatureMismatch(e)
        } else {
            BodyError::Incomplete(e)
        }
    }
}

/// A code S3 clients know that s3s has no constant for, with its status.
fn custom(code: &'static str, status: http::StatusCode, msg: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), msg);
    e.set_status_code(status);
    e
}

/// The S3 error for a namespace or block error of this kind (`msg` says what failed).
fn fs_error(kind: ErrorKind, msg: String) -> S3Error {
    use S3ErrorCode as C;
    let code = match kind {
        ErrorKind::NotFound | ErrorKind::ParentNotFound => C::NoSuchKey,
        ErrorKind::ConditionFailed | ErrorKind::AlreadyExists | ErrorKind::AlreadyOwned => C::PreconditionFailed,
        ErrorKind::LeaseConflict => C::ConditionalRequestConflict,
        ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::DirectoryNotEmpty => {
            return S3Error::with_message(
                C::InvalidArgument,
                format!("{msg} (Tarn stores keys as paths: a key cannot be both an object and a prefix of other keys)"),
            );
        }
        ErrorKind::QuotaExceeded => return custom("QuotaExceeded", http::StatusCode::FORBIDDEN, msg),
        ErrorKind::PermissionDenied => C::AccessDenied,
        ErrorKind::InvalidPath | ErrorKind::InvalidArgument => C::InvalidArgument,
        // SafeMode and an unfinished upgrade pass: the client may retry later.
        ErrorKind::Unavailable | ErrorKind::NotLeader | ErrorKind::SafeMode | ErrorKind::UpgradePending => {
            C::ServiceUnavailable
        }
        _ => C::InternalError,
    };
    S3Error::with_message(code, msg)
}

impl From<ApiError> for S3Error {
    fn from(e: ApiError) -> S3Error {
        use S3ErrorCode as C;
        let msg = e.to_string();
        let code = match e {
            ApiError::Fs { source, .. } => return fs_error(source.kind(), msg),
            ApiError::Body(BodyError::Sha256Mismatch(_)) => {
                return custom("XAmzContentSHA256Mismatch", http::StatusCode::BAD_REQUEST, msg);
            }
            ApiError::Body(BodyError::SignatureMismatch(_)) => C::SignatureDoesNotMatch,
            ApiError::Body(BodyError::Incomplete(_)) | ApiError::IncompleteBody(_) => C::IncompleteBody,
            ApiError::Internal(_) => C::InternalError,
            ApiError::AccessDenied(_) => C::AccessDenied,
            ApiError::InvalidAccessKeyId(_) => C::InvalidAccessKeyId,
            ApiError::AuthorizationQuery(_) => C::AuthorizationQueryParametersError,
            ApiError::NoSuchBucket(_) => C::NoSuchBucket,
            ApiError::NoSuchKey { .. } => C::NoSuchKey,
            ApiError::NoSuchUpload(_) => C::NoSuchUpload,
            ApiError::NoSuchVersion => C::NoSuchVersion,
            ApiError::BucketAlreadyOwnedByYou(_) => C::BucketAlreadyOwnedByYou,
            ApiError::BucketAlreadyExists(_) => C::BucketAlreadyExists,
            ApiError::BucketNotEmpty(_) => C::BucketNotEmpty,
            ApiError::PreconditionFailed(_) => C::PreconditionFailed,
            // These three go without a message, as S3 sends them.
            ApiError::CopySourceCondition => return S3Error::new(C::PreconditionFailed),
            ApiError::NotModified => return S3Error::new(C::NotModified),
            ApiError::RangeNotSatisfiable => return S3Error::new(C::InvalidRange),
            ApiError::BadDigest(_) => C::BadDigest,
            ApiError::InvalidDigest(_) => C::InvalidDigest,
            ApiError::InvalidArgument(_) => C::InvalidArgument,
            ApiError::InvalidRange(_) => C::InvalidRange,
            ApiError::InvalidRequest(_) => C::InvalidRequest,
            ApiError::InvalidPart(_) => C::InvalidPart,
            ApiError::InvalidTag(_) => C::InvalidTag,
            ApiError::InvalidPartNumber(_) => {
                return custom("InvalidPartNumber", http::StatusCode::RANGE_NOT_SATISFIABLE, msg);
            }
            ApiError::NoSuchTagSet(_) => C::NoSuchTagSet,
            ApiError::NoSuchCorsConfiguration(_) => C::NoSuchCORSConfiguration,
            ApiError::CorsForbidden(_) => return custom("AccessForbidden", http::StatusCode::FORBIDDEN, msg),
            ApiError::BadRequest(_) => return custom("BadRequest", http::StatusCode::BAD_REQUEST, msg),
            ApiError::InvalidPartOrder(_) => C::InvalidPartOrder,
            ApiError::EntityTooLarge(_) => C::EntityTooLarge,
            ApiError::EntityTooSmall(_) => C::EntityTooSmall,
            ApiError::MalformedXml(_) => C::MalformedXML,
            ApiError::NotImplemented(_) => C::NotImplemented,
        };
        S3Error::with_message(code, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: ErrorKind) -> ApiError {
        let source = ClientError::Refused { kind, code: kind.code(), message: "refused".into() };
        ApiError::Fs { what: "lookup", source }
    }

    fn s3(e: ApiError) -> (String, Option<String>, u16) {
        let e = S3Error::from(e);
        (e.code().as_str().to_string(), e.message().map(str::to_string), e.status_code().map_or(0, |s| s.as_u16()))
    }

    #[test]
    fn namespace_errors_map_by_kind() {
        let code = |k| s3(refused(k)).0;
        assert_eq!(code(ErrorKind::NotFound), "NoSuchKey");
        assert_eq!(code(ErrorKind::AlreadyOwned), "PreconditionFailed");
        assert_eq!(code(ErrorKind::LeaseConflict), "ConditionalRequestConflict");
        assert_eq!(code(ErrorKind::PermissionDenied), "AccessDenied");
        assert_eq!(code(ErrorKind::SafeMode), "ServiceUnavailable");
        assert_eq!(code(ErrorKind::Other), "InternalError");
        assert_eq!(
            s3(refused(ErrorKind::QuotaExceeded)),
            ("QuotaExceeded".into(), Some("lookup: refused".into()), 403)
        );
        let (code, msg, _) = s3(refused(ErrorKind::NotADirectory));
        assert_eq!(code, "InvalidArgument");
        assert!(msg.unwrap().starts_with("lookup: refused (Tarn stores keys as paths"));
    }

    #[test]
    fn refusals_keep_their_messages() {
        assert_eq!(
            s3(ApiError::NoSuchBucket("b".into())),
            ("NoSuchBucket".into(), Some("no bucket \"b\"".into()), 404)
        );
        assert_eq!(s3(ApiError::NotModified), ("NotModified".into(), None, 304));
        assert_eq!(s3(ApiError::CopySourceCondition), ("PreconditionFailed".into(), None, 412));
        assert_eq!(s3(ApiError::internal("part etag", "zz")).1.as_deref(), Some("part etag: zz"));
    }

    #[derive(Debug)]
    struct S3sText(&'static str);
    impl std::fmt::Display for S3sText {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for S3sText {}

    /// The Display texts of s3s 0.14.1's body stream errors (`UploadStreamError`,
    /// `AwsChunkedStreamError`, which cannot be named outside s3s) and what they become.
    #[test]
    fn error_texts_of_s3s_body_streams() {
        let body = |text: &'static str| s3(ApiError::from(BodyError::classify(Box::new(S3sText(text)))));
        let (code, msg, status) = body("UploadStreamError: Sha256Mismatch");
        assert_eq!((code.as_str(), status), ("XAmzContentSHA256Mismatch", 400));
        assert_eq!(msg.as_deref(), Some("request body: UploadStreamError: Sha256Mismatch"));
        assert_eq!(body("AwsChunkedStreamError: SignatureMismatch").0, "SignatureDoesNotMatch");
        assert_eq!(body("AwsChunkedStreamError: Incomplete").0, "IncompleteBody");
        assert_eq!(body("UploadStreamError: LengthMismatch").0, "IncompleteBody");
        // Typed errors go by type, whatever they say.
        let io = std::io::Error::other("Sha256Mismatch");
        assert!(matches!(BodyError::classify(Box::new(io)), BodyError::Incomplete(_)));
    }
}
