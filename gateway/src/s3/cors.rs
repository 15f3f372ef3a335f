//! CORS: Put/Get/DeleteBucketCors, and the rules applied to browsers' requests (the
//! preflight `OPTIONS` and the `Origin` of actual requests: `lib.rs` calls [`preflight`]
//! and [`allow_headers`] around s3s).
//!
//! A bucket's rules are part of its configuration record (`BucketConfig`, `s3.config`).
//! As on S3: at most 100 rules; each names origins (one `*` wildcard at most in each),
//! methods among GET, PUT, POST, DELETE and HEAD, allowed request headers (one `*` at most
//! in each, matched without regard to case), headers to expose and a max age. The first
//! rule that matches a request's origin, method and (for a preflight) requested headers
//! decides; a preflight no rule matches is refused with 403, an actual request without a
//! matching rule gets no CORS headers (the browser then withholds the answer).

use s3s::dto;
use s3s::{S3Request, S3Response};
use serde::{Deserialize, Serialize};

use super::config::{config_of, update_config};
use super::{AccessClass, ApiError, ApiResult, OpResult, TarnS3};

/// Who may call each operation of this module (see [`AccessClass`]).
pub(super) const ACCESS: &[(&str, AccessClass)] = &[
    ("GetBucketCors", AccessClass::Read { anonymous_read: false }),
    ("PutBucketCors", AccessClass::Write),
    ("DeleteBucketCors", AccessClass::Write),
];

const RULES_MAX: usize = 100;
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One CORS rule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// Whether `value` matches `pattern`, which may hold one `*` standing for any run of
/// characters.
fn glob(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (p, v) = if ignore_case {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    match p.split_once('*') {
        None => p == v,
        Some((head, tail)) => v.len() >= head.len() + tail.len() && v.starts_with(head) && v.ends_with(tail),
    }
}

impl CorsRule {
    fn allows(&self, origin: &str, method: &str, headers: &[String]) -> bool {
        self.allowed_origins.iter().any(|o| glob(o, origin, false))
            && self.allowed_methods.iter().any(|m| m == method)
            && headers.iter().all(|h| self.allowed_headers.iter().any(|a| glob(a, h, true)))
    }
}

/// The first of `rules` that allows `origin` to send `method` with `headers`.
pub(crate) fn matching<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
    headers: &[String],
) -> Option<&'r CorsRule> {
    rules.iter().find(|r| r.allows(origin, method, headers))
}

/// The rules of a request's `CORSConfiguration`, checked as S3 checks them.
fn from_dto(c: &dto::CORSConfiguration) -> ApiResult<Vec<CorsRule>> {
    if c.cors_rules.is_empty() {
        return Err(ApiError::MalformedXml("a CORSConfiguration needs at least one CORSRule".into()));
    }
    if c.cors_rules.len() > RULES_MAX {
        return Err(ApiError::InvalidRequest(format!("at most {RULES_MAX} CORS rules, not {}", c.cors_rules.len())));
    }
    let mut out = Vec::with_capacity(c.cors_rules.len());
    for r in &c.cors_rules {
        if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
            return Err(ApiError::MalformedXml("each CORSRule needs an AllowedOrigin and an AllowedMethod".into()));
        }
        for m in &r.allowed_methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(ApiError::InvalidRequest(format!(
                    "found unsupported HTTP method in CORS config: {m} (GET, PUT, POST, DELETE, HEAD)"
                )));
            }
        }
        for o in &r.allowed_origins {
            if o.matches('*').count() > 1 {
                return Err(ApiError::InvalidRequest(format!(
                    "AllowedOrigin {o:?} can not have more than one wildcard"
                )));
            }
        }
        let headers = r.allowed_headers.clone().unwrap_or_default();
        for h in &headers {
            if h.matches('*').count() > 1 {
                return Err(ApiError::InvalidRequest(format!(
                    "AllowedHeader {h:?} can not have more than one wildcard"
                )));
            }
        }
        out.push(CorsRule {
            id: r.id.clone(),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: headers,
            expose_headers: r.expose_headers.clone().unwrap_or_default(),
            max_age_seconds: r.max_age_seconds,
        });
    }
    Ok(out)
}

fn to_dto(rules: &[CorsRule]) -> Vec<dto::CORSRule> {
    rules
        .iter()
        .map(|r| dto::CORSRule {
            id: r.id.clone(),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: (!r.allowed_headers.is_empty()).then(|| r.allowed_headers.clone()),
            expose_headers: (!r.expose_headers.is_empty()).then(|| r.expose_headers.clone()),
            max_age_seconds: r.max_age_seconds,
        })
        .collect()
}

pub(super) async fn get_bucket_cors(
    s3: &TarnS3,
    req: S3Request<dto::GetBucketCorsInput>,
) -> OpResult<dto::GetBucketCorsOutput> {
    let bucket = req.input.bucket;
    let c = config_of(&s3.bucket_exists(&bucket).await?.xattrs)?;
    if c.cors.is_empty() {
        return Err(ApiError::NoSuchCorsConfiguration(format!("bucket {bucket:?} has no CORS configuration")));
    }
    Ok(S3Response::new(dto::GetBucketCorsOutput { cors_rules: Some(to_dto(&c.cors)) }))
}

pub(super) async fn put_bucket_cors(
    s3: &TarnS3,
    req: S3Request<dto::PutBucketCorsInput>,
) -> OpResult<dto::PutBucketCorsOutput> {
    let i = req.input;
    let rules = from_dto(&i.cors_configuration)?;
    update_config(s3, &i.bucket, |c| c.cors = rules).await?;
    Ok(S3Response::new(dto::PutBucketCorsOutput::default()))
}

pub(super) async fn delete_bucket_cors(
    s3: &TarnS3,
    req: S3Request<dto::DeleteBucketCorsInput>,
) -> OpResult<dto::DeleteBucketCorsOutput> {
    update_config(s3, &req.input.bucket, |c| c.cors.clear()).await?;
    Ok(S3Response::new(dto::DeleteBucketCorsOutput::default()))
}

/// The CORS rules of `bucket` (none if it has none or does not exist), for the HTTP layer.
pub(crate) async fn rules_of(nn: &tarn_client::NamenodeClient, bucket: &str) -> ApiResult<Vec<CorsRule>> {
    match nn.get_file_info(&crate::names::bucket_path(bucket), true).await {
        Ok(Some(st)) if st.is_dir() => Ok(config_of(&st.xattrs)?.cors),
        Ok(_) => Ok(Vec::new()),
        Err(source) => Err(ApiError::Fs { what: "bucket lookup", source }),
    }
}

/// What a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
/// answered with: the CORS headers of the rule that allows it, or `None` (403).
pub(crate) fn preflight(
    rules: &[CorsRule],
    origin: &str,
    method: &str,
    headers: &[String],
) -> Option<Vec<(&'static str, String)>> {
    let r = matching(rules, origin, method, headers)?;
    let mut out = allow_headers(r, origin);
    out.push(("access-control-allow-methods", r.allowed_methods.join(", ")));
    if !headers.is_empty() {
        out.push(("access-control-allow-headers", headers.join(", ")));
    }
    if let Some(age) = r.max_age_seconds {
        out.push(("access-control-max-age", age.to_string()));
    }
    Some(out)
}

/// The CORS headers of an actual request's answer: those of the rule that allows
/// `origin` to send `method` (none if no rule does).
pub(crate) fn actual(rules: &[CorsRule], origin: &str, method: &str) -> Vec<(&'static str, String)> {
    match matching(rules, origin, method, &[]) {
        Some(r) => allow_headers(r, origin),
        // The answer still depends on the origin: a shared cache must not give it to
        // an origin a rule allows.
        None if !rules.is_empty() => vec![("vary", VARY.into())],
        None => Vec::new(),
    }
}

const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// The headers an answer to `origin` carries under rule `r`.
fn allow_headers(r: &CorsRule, origin: &str) -> Vec<(&'static str, String)> {
    let any = r.allowed_origins.iter().any(|o| o == "*");
    let mut out = vec![("access-control-allow-origin", if any { "*".to_string() } else { origin.to_string() })];
    if !any {
        out.push(("access-control-allow-credentials", "true".into()));
    }
    if !r.expose_headers.is_empty() {
        out.push(("access-control-expose-headers", r.expose_headers.join(", ")));
    }
    out.push(("vary", VARY.into()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            id: None,
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        }
    }

    #[test]
    fn the_first_rule_that_allows_a_request_decides() {
        let rules = [rule(&["https://*.example.com"], &["GET", "PUT"], &["content-*"]), rule(&["*"], &["GET"], &[])];
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let r = matching(&rules, "https://app.example.com", "PUT", &h(&["Content-Type"])).unwrap();
        assert_eq!(r.allowed_methods, ["GET", "PUT"]);
        // Another origin: only the second rule's GET, without headers.
        assert!(matching(&rules, "https://evil.test", "PUT", &[]).is_none());
        assert_eq!(matching(&rules, "https://evil.test", "GET", &[]).unwrap().allowed_origins, ["*"]);
        assert!(matching(&rules, "https://evil.test", "GET", &h(&["x-custom"])).is_none());
        // Origins match with case; headers without.
        assert!(matching(&rules[..1], "HTTPS://APP.EXAMPLE.COM", "GET", &[]).is_none());
        assert!(matching(&rules[..1], "https://app.example.com", "GET", &h(&["CONTENT-MD5"])).is_some());
        // A wildcard needs what is around it.
        assert!(!glob("https://*.example.com", "https://example.com", false));
    }

    #[test]
    fn a_preflights_answer_names_the_origin_and_what_it_may_do() {
        let rules = [rule(&["https://app.example.com"], &["GET", "PUT"], &["*"])];
        let hs = preflight(&rules, "https://app.example.com", "PUT", &["content-type".into()]).unwrap();
        let get = |k: &str| hs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("access-control-allow-origin"), Some("https://app.example.com"));
        assert_eq!(get("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(get("access-control-allow-headers"), Some("content-type"));
        assert_eq!(get("access-control-max-age"), Some("600"));
        assert_eq!(get("access-control-expose-headers"), Some("ETag"));
        assert_eq!(get("access-control-allow-credentials"), Some("true"));
        assert!(preflight(&rules, "https://app.example.com", "DELETE", &[]).is_none());
        let any = [rule(&["*"], &["GET"], &[])];
        let hs = preflight(&any, "https://x.test", "GET", &[]).unwrap();
        assert!(hs.contains(&("access-control-allow-origin", "*".into())));
        assert!(!hs.iter().any(|(n, _)| *n == "access-control-allow-credentials"));
    }
}
