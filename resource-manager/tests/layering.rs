//! The resource manager's layering, checked on the source: only the RPC edge
//! (`service.rs`) makes gRPC statuses, and the core (`cluster.rs`) does no I/O and reads no
//! clock (time is passed in), so its rules are unit-tested without a server.

use std::path::Path;

/// `src/<name>` without its comments.
fn code(name: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(name)).unwrap();
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// Whether `word` occurs in `text` as a whole identifier (`Status`, not `ContainerStatus`).
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(ident) && !text[i + word.len()..].chars().next().is_some_and(ident)
    })
}

#[test]
fn only_the_edge_makes_statuses() {
    let files: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(has_word(&code("service.rs"), "Status"), "the check must see the edge's statuses");
    for f in files.iter().filter(|f| f.as_str() != "service.rs") {
        let c = code(f);
        assert!(!has_word(&c, "Status") && !c.contains(".status("), "{f} makes a gRPC status: only service.rs may");
    }
}

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let all = code("cluster.rs");
    // Its unit tests make their own instants.
    let c = all.split("#[cfg(test)]").next().unwrap();
    assert!(c.contains("now: Instant"), "the check must see the core's rules");
    for banned in ["Instant::now", "SystemTime", "tokio", "tonic", "std::fs", "std::net"] {
        assert!(!c.contains(banned), "cluster.rs uses {banned}");
    }
}
