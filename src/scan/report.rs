//! What a scan found and did, as data: the command line prints it as text
//! or as one JSON object. Set paths are raw bytes; they are shown with
//! [`show_path`], which escapes what is not printable UTF-8 so that every
//! name (newlines and invalid UTF-8 included) stays on one line and can be
//! told apart.

use serde::{Serialize, Serializer};

/// A path that was skipped or failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(serialize_with = "ser_path")]
    pub path: Vec<u8>,
    pub reason: String,
}

/// The outcome of one scan of one set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    pub set: String,
    /// Regular files (one per inode; further names are `hardlinks`).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// FIFOs and character and block device nodes.
    pub specials: u64,
    /// Bytes in the regular files.
    pub bytes: u64,
    /// Entries created, changed and deleted in the index by this scan.
    pub new: u64,
    pub changed: u64,
    pub deleted: u64,
    /// Files chunked and hashed, and their bytes.
    pub files_read: u64,
    pub bytes_read: u64,
    /// Files the quick check proved unchanged (not read).
    pub files_unchanged: u64,
    /// Chunks produced by the files read.
    pub chunks_hashed: u64,
    /// The set's generation before and after (equal when nothing changed).
    pub previous_generation: u64,
    pub generation: u64,
    pub elapsed_s: f64,
    /// Roots that do not exist on this node: their entries were removed
    /// from the index like any deleted path (a guard on deletions can tell
    /// a vanished root from ordinary deletes by this list).
    #[serde(serialize_with = "ser_paths")]
    pub missing_roots: Vec<Vec<u8>>,
    /// Paths not mirrored: sockets, mount points' contents, names no set
    /// path can have.
    pub skipped: Vec<Problem>,
    /// Paths that could not be examined or read; their previous index
    /// state is kept. Any error makes the scan partial.
    pub errors: Vec<Problem>,
}

impl ScanReport {
    /// Some paths failed (exit code 1 on the command line).
    pub fn is_partial(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// A set path for people: valid UTF-8 as is, except control characters and
/// backslashes, which are escaped like invalid bytes (`\n`, `\t`, `\\`,
/// `\xNN`).
pub fn show_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for chunk in p.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut b = [0u8; 4];
                    for byte in c.encode_utf8(&mut b).bytes() {
                        out.push_str(&format!("\\x{byte:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn ser_path<S: Serializer>(p: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&show_path(p))
}

fn ser_paths<S: Serializer>(ps: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ps.iter().map(|p| show_path(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shown_on_one_line_and_unambiguously() {
        assert_eq!(show_path(b"var/spool/a b"), "var/spool/a b");
        assert_eq!(show_path(b"x/new\nline\tand\\"), "x/new\\nline\\tand\\\\");
        assert_eq!(show_path(b"caf\xc3\xa9/\xff\xfe"), "café/\\xff\\xfe");
        assert_eq!(show_path(b"bell\x07"), "bell\\x07");
    }

    #[test]
    fn json_shows_escaped_paths() {
        let r = ScanReport {
            errors: vec![Problem {
                path: b"a\xff".to_vec(),
                reason: "x".into(),
            }],
            missing_roots: vec![b"etc/printcap".to_vec()],
            ..ScanReport::default()
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["errors"][0]["path"], "a\\xff");
        assert_eq!(j["missing_roots"][0], "etc/printcap");
        assert!(r.is_partial());
    }
}
