//! The namenode's layering, as ARCHITECTURE.md states it, checked on the source: only the
//! RPC edges (`service.rs`, `dn_service.rs`, `network.rs`) make gRPC statuses, only
//! `service.rs` names error kinds, and no core module depends on an edge or on the wiring
//! (`node.rs`), so the edges sit on top of an acyclic core.

use std::path::{Path, PathBuf};

/// The RPC edge modules.
const EDGES: &[&str] = &["service.rs", "dn_service.rs", "network.rs"];
/// The module that names error kinds (`tarn_proto::ErrorKind`).
const KIND_NAMER: &str = "service.rs";
/// The module that wires the servers and background tasks (may use every module).
const WIRING: &str = "node.rs";

/// Every `.rs` file under `src/`, as (path relative to `src/`, its code without comments).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let code: Vec<&str> = text
                .lines()
                .map(|l| match l.find("//") {
                    Some(i) => &l[..i],
                    None => l,
                })
                .collect();
            (p.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/"), code.join("\n"))
        })
        .collect()
}

/// Whether `word` occurs in `text` as a whole identifier.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Whether `code` names `tarn_proto`'s error kinds (other crates' `ErrorKind`s aside).
fn names_error_kinds(code: &str) -> bool {
    let code = code.replace("rocksdb::ErrorKind", "").replace("io::ErrorKind", "");
    has_word(&code, "ErrorKind") || code.contains("ERROR_KIND_HEADER") || code.contains("LEADER_HEADER")
}

fn is_edge(file: &str) -> bool {
    EDGES.contains(&file)
}

#[test]
fn the_checks_see_what_the_edges_do() {
    // Guards the guard: if the scan found nothing where statuses are made, it would pass
    // for any source.
    let all = sources();
    let get = |f: &str| &all.iter().find(|(n, _)| n == f).unwrap_or_else(|| panic!("no src/{f}")).1;
    assert!(has_word(get("service.rs"), "Status"));
    assert!(names_error_kinds(get("service.rs")));
    assert!(get("dn_service.rs").contains("crate::service"));
    assert!(get(WIRING).contains("crate::dn_service"));
    assert!(!has_word("FileStatus StatusResponse status_pb", "Status"));
    assert!(has_word("-> Result<(), Status> {", "Status"));
}

#[test]
fn only_rpc_edges_make_grpc_statuses() {
    let offenders: Vec<String> =
        sources().into_iter().filter(|(f, code)| !is_edge(f) && has_word(code, "Status")).map(|(f, _)| f).collect();
    assert!(offenders.is_empty(), "tonic::Status outside the RPC edges {EDGES:?}: {offenders:?}");
}

#[test]
fn only_the_client_service_names_error_kinds() {
    let offenders: Vec<String> =
        sources().into_iter().filter(|(f, code)| f != KIND_NAMER && names_error_kinds(code)).map(|(f, _)| f).collect();
    assert!(offenders.is_empty(), "error kinds named outside {KIND_NAMER}: {offenders:?}");
}

#[test]
fn core_modules_depend_on_no_edge_and_not_on_the_wiring() {
    let mut offenders = Vec::new();
    for (f, code) in sources() {
        if is_edge(&f) || f == WIRING || f == "lib.rs" {
            continue;
        }
        for edge in EDGES.iter().chain([&WIRING]) {
            let module = format!("crate::{}", edge.trim_end_matches(".rs"));
            if code
                .match_indices(&module)
                .any(|(i, _)| !code[i + module.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
            {
                offenders.push(format!("{f} uses {module}"));
            }
        }
    }
    assert!(offenders.is_empty(), "core modules reaching up into the edges or the wiring: {offenders:?}");
}
