//! Rack topology: which rack each datanode is in, for placement.
//!
//! Like HDFS's table mapping (`net.topology.table.file.name`), the namenode reads a file
//! of `HOST RACK` lines; HOST is a datanode's advertised `host:port`, host name or IP
//! address. The operator keeps one file for the cluster instead of a setting per
//! datanode. A datanode the table does not name keeps the rack it reports itself (its
//! `datanode.rack` setting), and a datanode that reports none is in `/default-rack`.
//!
//! ```text
//! # host[:port]     rack
//! 10.0.1.11         /dc1/rack1
//! dn-2.example.com  /dc1/rack2
//! 10.0.1.13:9866    /dc1/rack2
//! ```

use std::collections::HashMap;
use std::path::Path;

use crate::error::NamenodeError;

/// The rack of datanodes that report none and that the table does not name.
pub const DEFAULT_RACK: &str = "/default-rack";

#[derive(Debug, Clone, Default)]
pub struct Topology {
    racks: HashMap<String, String>,
}

impl Topology {
    /// Reads a topology table; every malformed line is an error naming the line.
    pub fn load(path: &Path) -> Result<Topology, NamenodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NamenodeError::io(format!("read topology file {}", path.display()), e))?;
        Topology::parse(&text).map_err(|e| NamenodeError::Config(format!("topology file {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Topology, String> {
        let mut racks = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [host, rack] = fields[..] else {
                return Err(format!("line {}: expected `HOST RACK`, found {line:?}", i + 1));
            };
            if !rack.starts_with('/') || rack.len() < 2 {
                return Err(format!("line {}: rack {rack:?} must start with '/' (like /dc1/rack7)", i + 1));
            }
            if let Some(old) = racks.insert(host.to_ascii_lowercase(), rack.to_string()) {
                if old != rack {
                    return Err(format!("line {}: {host} is listed in both {old} and {rack}", i + 1));
                }
            }
        }
        Ok(Topology { racks })
    }

    pub fn is_empty(&self) -> bool {
        self.racks.is_empty()
    }

    /// The rack of a datanode advertising `addr` that reports `reported` itself: the table's
    /// entry for `host:port`, then for the host, then the reported rack, then the default.
    pub fn rack_of(&self, addr: &str, reported: &str) -> String {
        let addr = addr.to_ascii_lowercase();
        let host = match addr.rsplit_once(':') {
            // `[::1]:9866` → `::1`; `host:9866` → `host`.
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                h.trim_start_matches('[').trim_end_matches(']')
            }
            _ => addr.as_str(),
        };
        if let Some(r) = self.racks.get(&addr).or_else(|| self.racks.get(host)) {
            return r.clone();
        }
        if reported.is_empty() {
            DEFAULT_RACK.to_string()
        } else {
            reported.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries_win_over_reported_racks() {
        let t = Topology::parse(
            "# comment\n\n10.0.1.11 /dc1/rack1\nDN-2.example.com  /dc1/rack2 # trailing\n10.0.1.13:9866 /dc1/rack3\n::1 /v6\n",
        )
        .unwrap();
        assert_eq!(t.rack_of("10.0.1.11:9866", "/self"), "/dc1/rack1");
        assert_eq!(t.rack_of("dn-2.example.com:1", ""), "/dc1/rack2");
        assert_eq!(t.rack_of("10.0.1.13:9866", ""), "/dc1/rack3");
        // Another port on the same host is not the listed one.
        assert_eq!(t.rack_of("10.0.1.13:9867", ""), DEFAULT_RACK);
        assert_eq!(t.rack_of("10.0.1.99:9866", "/self"), "/self");
        assert_eq!(t.rack_of("[::1]:9866", ""), "/v6");
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = Topology::parse("10.0.0.1 /a\n10.0.0.2\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = Topology::parse("10.0.0.1 rack1\n").unwrap_err();
        assert!(e.contains("must start with '/'"), "{e}");
        let e = Topology::parse("h /a\nH /b\n").unwrap_err();
        assert!(e.contains("listed in both"), "{e}");
    }
}
